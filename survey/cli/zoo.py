"""`survey zoo ...`: the trained networks, their recipes and cards."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from survey.cli.common import command

app = typer.Typer(help="The network zoo: list, train and evaluate networks.\n\nExample: survey zoo list",
                  no_args_is_help=True)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


@app.command("list")
@command
def list_zoo() -> None:
    """Name, operator, sampling, parameter count, test PSNR of network / H / reference, weights hash, and the
    trained uncertainty companions (untrained ones in parentheses: `survey zoo train <name>-<method>`).

    Example: survey zoo list
    """
    from survey.nets.zoo import ZOO, load_card

    table = Table("name", "operator", "sampling", "dataset", "params", "PSNR net", "PSNR H", "PSNR ref", "sha256",
                  "companions")
    for name, e in ZOO.items():
        card = load_card(name) or {}
        m = card.get("test_metrics", {})
        sampling = ", ".join(f"{k}={v}" for k, v in e.physics.items() if k not in ("kind", "seed"))
        table.add_row(name, e.physics["kind"], sampling, e.dataset, _fmt(card.get("parameters")),
                      _fmt(m.get("psnr_net")), _fmt(m.get("psnr_H")), _fmt(m.get("psnr_reference")),
                      (card.get("weights_sha256") or "untrained")[:12], _companions(name))
    Console(width=200).print(table)


def _companions(network: str) -> str:
    """"inn, mcdropout, (probout)": the methods of a zoo network's companions, untrained ones in parentheses;
    "-" for none."""
    from survey.nets.zoo import companion_names, is_trained

    methods = [n.rsplit("-", 1)[1] if is_trained(n) else f"({n.rsplit('-', 1)[1]})" for n in companion_names(network)]
    return ", ".join(methods) or "-"


@app.command("train")
@command
def train_cmd(
    name: str = typer.Argument(..., help="Zoo network name (see `survey zoo list`), or a companion such as "
                                         "dncnn-inn, dncnn-mcdropout, lactunet-probout."),
    steps: int = typer.Option(None, help="Override the recipe's step count (for quick trials)."),
    seed: int = typer.Option(0, help="Training seed."),
    device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
) -> None:
    """Train NAME by its recipe and write its weights and model card into the package.

    Example: survey zoo train dagan --steps 200
    """
    from survey.nets.train import train

    def log(step: int, loss: float, seconds: float) -> None:
        typer.echo(f"step {step:5d}  loss {loss:.5f}  {seconds:6.0f} s")

    card = train(name, steps=steps, seed=seed, device=device, log=log)
    m = card["test_metrics"]
    if "method" in card:  # an uncertainty companion (survey.nets.uncertainty)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in m.items())
        typer.echo(f"{name}: {shown}; {card['wall_time_s']:.0f} s; sha256 {card['weights_sha256'][:12]}")
        return
    typer.echo(f"{name}: test PSNR net {m['psnr_net']:.2f} dB, H {m['psnr_H']:.2f} dB, "
               f"reference {m.get('psnr_reference', float('nan')):.2f} dB; {card['wall_time_s']:.0f} s; "
               f"sha256 {card['weights_sha256'][:12]}")


@app.command("eval")
@command
def eval_cmd(
    name: str = typer.Argument(..., help="Zoo network name, or a network declared in --study."),
    dataset: str = typer.Option(None, help="Dataset to evaluate on (default: the network's own, or the "
                                           "study's first)."),
    split: str = typer.Option("test", help="train, val or test."),
    count: int = typer.Option(None, help="Number of images (default: all)."),
    study: Path = typer.Option(None, "--study", help="Study file declaring NAME (bring-your-own networks)."),
) -> None:
    """Mean PSNR/SSIM of network NAME, of H and of the reference on a dataset split.

    Example: survey zoo eval mine --study my-study.toml --count 8
    """
    from survey.cli.common import progress_bar

    with progress_bar(f"evaluating {name} (network, H and the reference)"):
        if study is not None:
            from survey.engine.networks import evaluate_study_network
            from survey.spec import load_study

            result = evaluate_study_network(load_study(study), name, dataset=dataset, split=split, count=count)
        else:
            from survey.nets.evaluation import evaluate_zoo_network

            result = evaluate_zoo_network(name, dataset=dataset, split=split, count=count)
    table = Table("method", "PSNR (dB)", "SSIM")
    for key in ("net", "H", "reference"):
        table.add_row(key, _fmt(result.metrics[f"psnr_{key}"]), f"{result.metrics[f'ssim_{key}']:.3f}")
    Console().print(f"{name} on {result.dataset}/{split} ({result.count} images)", markup=False)
    Console().print(table)


@app.command("lipschitz")
@command
def lipschitz_cmd(
    name: str = typer.Argument(..., help="Zoo network name."),
    images: int = typer.Option(2, help="Test images at which to compute the local sigma_1 (0: the bound only)."),
    domain: str = typer.Option("image", help="image (r -> f(A(x + r))) or measurement (e -> f(Ax + e))."),
    layers: bool = typer.Option(False, help="Also list the norm used for every layer."),
) -> None:
    """Global upper bound on network NAME's Lipschitz constant (layer norms along its graph) beside the
    largest local Jacobian sigma_1 seen on test images.

    Example: survey zoo lipschitz dagan --images 4 --layers
    """
    from survey.tasks.bracket import zoo_gap

    found = zoo_gap(name, count=images, domain=domain)
    bound = found.bound
    if layers:
        table = Table("layer", "norm")
        for layer, value in bound.layers.items():
            table.add_row(layer, "none" if value is None else f"{value:.5g}")
        Console().print(table)
    shown = "none" if bound.value is None else f"{bound.value:.5g}"
    estimate = "" if bound.estimate is None else f", Lanczos estimate {bound.estimate:.5g} (not a bound)"
    kind = "certified upper bound" if bound.certified else "upper bound (some factors only estimated: " \
        + ", ".join(bound.uncertified) + ")"
    typer.echo(f"{name} ({domain} domain): {kind} {shown}{estimate}" +
               (f" ({'; '.join(bound.missing)})" if bound.missing else ""))
    if found.sigma:
        sigma = max(found.sigma)
        gap = f"; bound / sigma_1 = {found.gap:.4g}" if found.gap is not None else ""
        typer.echo(f"largest local sigma_1 over {len(found.sigma)} images: {sigma:.5g}{gap}")
