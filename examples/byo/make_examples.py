"""Write the example's network files: net.safetensors (weights of net.py's SmallNet), model.pt2 (the same
network exported with torch.export and a dynamic batch dimension) and model_ts.pt (traced TorchScript).

Archives take the measurements only, so the operator (here `study.toml`'s MRI physics) is traced into them.
Run from this folder: python make_examples.py (seeded: the files come out the same every time).
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from net import build
from survey.physics import make_physics

HERE = Path(__file__).parent
#: Must match the networks' `physics` in study.toml.
PHYSICS = dict(kind="mri", size=16, ratio=0.5, mask="uniform-lines", seed=0)


class MeasurementsOnly(nn.Module):
    """net(y, physics) as module(y): what an archive holds (the physics becomes part of the graph)."""

    def __init__(self, net: nn.Module, physics):
        super().__init__()
        self.net, self.physics = net, physics

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y, self.physics)


def main() -> None:
    torch.manual_seed(0)
    net = build().eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(HERE / "net.safetensors"))
    physics = make_physics(**PHYSICS)
    model = MeasurementsOnly(net, physics).eval()
    y = physics.A(torch.rand(2, 1, PHYSICS["size"], PHYSICS["size"]))
    # A dynamic batch dimension: the survey calls the network on batches of every size.
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(model, (y,), dynamic_shapes={"y": {0: batch}})
    torch.export.save(exported, str(HERE / "model.pt2"))
    with torch.no_grad():
        torch.jit.trace(model, (y,)).save(str(HERE / "model_ts.pt"))


if __name__ == "__main__":
    main()
