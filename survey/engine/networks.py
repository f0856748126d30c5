"""Turn a study's network entries into handles a Ray worker can rebuild on its own device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from survey.nets.byo import FactorySource, build_network, check_network, resolve_factory
from survey.spec import NetworkSpec, Study


@dataclass(frozen=True)
class NetworkHandle:
    """Picklable recipe for one network: a zoo name, or a resolved bring-your-own factory plus physics."""

    name: str
    zoo: bool
    physics: dict
    factory: FactorySource | None = None

    @property
    def size(self) -> int:
        """Image side (pixels) of the network's operator."""
        return int(self.physics["size"])

    def build(self, device: str | torch.device = "cpu"):
        """(net in eval mode, physics) on `device`."""
        from survey.physics import make_physics

        if self.zoo:
            from survey.nets.zoo import load_network
            return load_network(self.name, device)
        physics = make_physics(**self.physics).to(device)
        net = build_network(self.factory).to(device)
        check_network(self.name, net, physics, device)
        return net, physics

    def build_companions(self, net, device: str | torch.device = "cpu") -> dict:
        """The network's trained uncertainty companions, method -> model, around `net` on `device`
        (zoo networks: `<name>-inn`, `<name>-mcdropout`, `<name>-probout` where their weights exist;
        none for bring-your-own networks)."""
        if not self.zoo:
            return {}
        from survey.nets.uncertainty import load_companions
        return load_companions(self.name, net, device)

    def companion_methods(self) -> list[str]:
        """The methods of the trained companions `build_companions` would load (none for bring-your-own)."""
        if not self.zoo:
            return []
        from survey.nets.zoo import companion_names, is_trained
        return [name.rsplit("-", 1)[1] for name in companion_names(self.name) if is_trained(name)]

    def weights_sha256(self) -> str | None:
        import hashlib
        if self.zoo:
            from survey.nets.zoo import load_card
            return (load_card(self.name) or {}).get("weights_sha256")
        if self.factory is not None and self.factory.weights is not None:
            return hashlib.sha256(self.factory.weights).hexdigest()
        if self.factory is not None and self.factory.source is not None:
            return hashlib.sha256(self.factory.source).hexdigest()
        return None


def resolve_network(spec: NetworkSpec, base_dir: Path) -> NetworkHandle:
    """Check a network entry on the driver (files exist, zoo weights trained) and make its handle."""
    if spec.factory is None:
        from survey.nets.zoo import entry, is_random_init, is_trained
        if not (is_trained(spec.name) or is_random_init(spec.name)):
            raise ValueError(f"zoo network {spec.name!r} is not trained; run `survey zoo train {spec.name}`")
        return NetworkHandle(spec.name, True, dict(entry(spec.name).physics))
    src = resolve_factory(spec.name, spec.factory, base_dir, spec.weights, spec.kwargs)
    return NetworkHandle(spec.name, False, dict(spec.physics), src)


def resolve_networks(study: Study) -> dict[str, NetworkHandle]:
    """Handles of every network of `study`, by name."""
    return {spec.name: resolve_network(spec, study.base_dir) for spec in study.networks}


def evaluate_study_network(study: Study, name: str, *, dataset: str | None = None, split: str = "test",
                           count: int | None = None, device: str = "cpu"):
    """Evaluate network `name` declared in `study` (see `survey.nets.evaluation`), on the study's first
    dataset (with its parameters) unless `dataset` is given."""
    from survey.nets.evaluation import evaluate_network

    spec = next((n for n in study.networks if n.name == name), None)
    if spec is None:
        raise ValueError(f"{study.path}: no network named {name!r} (declared: {[n.name for n in study.networks]})")
    net, physics = resolve_network(spec, study.base_dir).build(device)
    params: dict = {}
    if dataset is None:
        dataset, params = study.datasets[0].loader, dict(study.datasets[0].params)
    return evaluate_network(name, net, physics, dataset, split=split, count=count, params=params,
                            base_dir=study.base_dir, device=device)
