"""Parallel-beam CT: the Radon transform as a cached sparse matrix, its exact adjoint, and FBP.

Geometry (scikit-image's, so our sinograms equal `skimage.transform.radon` to rounding error):
the rotation axis is the pixel (n // 2, n // 2); `views` angles theta_k = k * angular_range / views
degrees, k = 0..views-1, so angular_range < 180 leaves a missing wedge of 180 - angular_range
degrees; detector bin j sits at offset s = j - detectors // 2 pixels from the axis. Each ray is
sampled at unit spacing u = i - detectors // 2, i = 0..detectors-1, at the image point
(col, row) = (n//2 + s cos(theta) + u sin(theta), n//2 - s sin(theta) + u cos(theta)) with bilinear
interpolation and zero outside the image (ray-driven; exactly what skimage's rotate-and-sum does).
With this orientation a pixel at (row, col) projects onto
s = (col - n//2) cos(theta) - (row - n//2) sin(theta).

Mapping to scikit-image: ours[b, 0] == radon(x[b, 0], theta=angles, circle=False).T when
detectors = ceil(sqrt(2) n) (our default: every pixel is seen from every angle) and
== radon(..., circle=True).T when detectors = n (skimage then assumes the image is zero outside
the inscribed circle; so do we, the corners are not seen at every angle).

A is a float64 CSR matrix S of shape (views * detectors, n * n), built once per (n, views,
angular_range, detectors) and cached; A(x) = S x and A_adjoint(y) = S^T y, so the adjoint is exact
by construction. Sizes: 64 x 64 with 50 views has 0.45 M non-zeros (11 MB for S and S^T);
128 x 128 with 180 views ~6.5 M (~160 MB, built in about a second).
Operator norm ||A||_2 (`norm()`, power iteration) is close to sqrt(views * n): 55.6 for
64 x 64 with 50 views, 149 for 128 x 128 with 180 views.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from survey.physics.base import Axis, LinearPhysics

FILTERS = ("ramp", "hann", "none")
_REAL_DTYPES = (torch.float32, torch.float64)
_COMPLEX_DTYPES = (torch.complex64, torch.complex128)


def default_detectors(size: int) -> int:
    """ceil(sqrt(2) * size): the image diagonal, scikit-image's `circle=False` sinogram width."""
    return math.ceil(math.sqrt(2) * size)


def projection_angles(views: int, angular_range: float) -> np.ndarray:
    """The `views` projection angles in degrees, evenly spaced over [0, angular_range)."""
    return np.arange(views, dtype=np.float64) * (float(angular_range) / views)


def _ray_driven_matrix(size: int, angles_deg: np.ndarray, detectors: int) -> sp.csr_matrix:
    """Sparse (views * detectors, size * size) matrix of bilinear ray samples (see module doc)."""
    offsets = np.arange(detectors, dtype=np.float64) - detectors // 2
    s, u = np.meshgrid(offsets, offsets, indexing="ij")  # (detector, sample along the ray)
    bins = np.broadcast_to(np.arange(detectors)[:, None], s.shape)
    return _ray_matrix(size, angles_deg, float(size // 2), s, u, bins, detectors, 1.0)


def _ray_matrix(size: int, angles_deg: np.ndarray, centre: float, s: np.ndarray, u: np.ndarray,
                bins: np.ndarray, detectors: int, weight: float) -> sp.csr_matrix:
    """Sum over rays (offset s from the axis at pixel coordinate `centre`, samples u along them, both in
    pixels) of bilinear image samples times `weight`, into detector bin `bins`: (views * detectors, size^2)."""
    blocks = []
    for angle in np.deg2rad(angles_deg):  # one vectorised block per view
        cos, sin = math.cos(angle), math.sin(angle)
        col = centre + cos * s + sin * u
        row = centre - sin * s + cos * u
        col0, row0 = np.floor(col), np.floor(row)
        fc, fr = col - col0, row - row0
        col0, row0 = col0.astype(np.int64), row0.astype(np.int64)
        rows, cols, vals = [], [], []
        for dc, dr, w in ((0, 0, (1 - fc) * (1 - fr)), (1, 0, fc * (1 - fr)),
                          (0, 1, (1 - fc) * fr), (1, 1, fc * fr)):
            c, r = col0 + dc, row0 + dr
            keep = (c >= 0) & (c < size) & (r >= 0) & (r < size) & (w > 0)
            rows.append(bins[keep])
            cols.append(r[keep] * size + c[keep])
            vals.append(weight * w[keep])
        # COO -> CSR sums the repeated (bin, pixel) pairs of neighbouring samples on one ray.
        blocks.append(sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                    shape=(detectors, size * size)))
    return sp.vstack(blocks, format="csr")


@lru_cache(maxsize=2)
def finer_matrix(size: int, views: int, angular_range: float, detectors: int, factor: int) -> torch.Tensor:
    """float64 CPU CSR (views * detectors, (factor size)^2): the operator's geometry on a grid `factor`
    times finer, each detector bin the mean of `factor` sub-rays across its width, samples along a ray
    1 / factor pixel apart (so values are line integrals in the coarse operator's pixel units).

    Coarse pixel centre i sits at fine coordinate factor (i + 1/2) - 1/2, so the rotation axis (coarse
    pixel n // 2) is at the same physical point on both grids.
    """
    fine = factor * size
    offsets = np.arange(detectors, dtype=np.float64) - detectors // 2
    sub = np.arange(factor, dtype=np.float64) - (factor - 1) / 2
    s_fine = (factor * offsets[:, None] + sub[None, :]).ravel()
    reach = math.ceil(math.sqrt(2) * fine / 2) + factor
    u_fine = np.arange(-reach, reach + 1, dtype=np.float64)
    s, u = np.meshgrid(s_fine, u_fine, indexing="ij")
    bins = np.broadcast_to(np.repeat(np.arange(detectors), factor)[:, None], s.shape)
    centre = factor * (size // 2 + 0.5) - 0.5
    matrix = _ray_matrix(fine, projection_angles(views, angular_range), centre, s, u, bins, detectors,
                         1.0 / factor**2)
    matrix.sort_indices()
    return _torch_csr(matrix)


def _torch_csr(matrix: sp.csr_matrix) -> torch.Tensor:
    index = np.int32 if matrix.nnz < 2**31 - 1 else np.int64  # int32 CSR is ~4x faster on CPU
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(index)), torch.from_numpy(matrix.indices.astype(index)),
            torch.from_numpy(matrix.data.astype(np.float64)), size=matrix.shape,
            dtype=torch.float64, check_invariants=False)


@lru_cache(maxsize=4)
def system_matrices(size: int, views: int, angular_range: float,
                    detectors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, S^T) as float64 CPU CSR tensors, cached per geometry. Shared: never modify in place."""
    matrix = _ray_driven_matrix(size, projection_angles(views, angular_range), detectors)
    matrix.sort_indices()
    return _torch_csr(matrix), _torch_csr(matrix.T.tocsr())


class _SparseProduct(torch.autograd.Function):
    """matrix @ dense with the backward pass matrix^T @ grad (itself differentiable again)."""

    @staticmethod
    def forward(ctx, dense: torch.Tensor, matrix: torch.Tensor, transpose: torch.Tensor) -> torch.Tensor:
        ctx.matrices = (matrix, transpose)
        return torch.sparse.mm(matrix, dense)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        matrix, transpose = ctx.matrices
        return _SparseProduct.apply(grad.contiguous(), transpose, matrix), None, None


def fbp_filter(detectors: int, filter: str) -> tuple[int, torch.Tensor]:
    """(padded length P, real rfft response of length P // 2 + 1) of the FBP filter, float64.

    The ramp is the band-limited ramp sampled in space (Kak & Slaney eq. 3.61: h[0] = 1/4,
    h[k] = -1/(pi k)^2 for odd k, 0 for even k, unit detector spacing), whose transform is
    ~|f| (f in cycles per pixel) without the DC bias of a sampled |f|. P >= 2 * detectors, so the
    circular convolution over P points equals the linear one on the `detectors` kept bins.
    "hann" multiplies by 0.5 (1 + cos(2 pi f)); "none" is the constant 1 (plain back-projection).
    """
    padded = max(64, 2 ** math.ceil(math.log2(2 * detectors)))
    if filter == "none":
        return padded, torch.ones(padded // 2 + 1, dtype=torch.float64)
    k = np.arange(padded)
    k = np.minimum(k, padded - k)
    kernel = np.zeros(padded)
    kernel[0] = 0.25
    odd = k % 2 == 1
    kernel[odd] = -1.0 / (np.pi * k[odd]) ** 2
    response = np.fft.rfft(kernel).real
    if filter == "hann":
        response = response * 0.5 * (1.0 + np.cos(2.0 * np.pi * np.fft.rfftfreq(padded)))
    return padded, torch.from_numpy(response)


def _convolution_matrix(response: torch.Tensor, padded: int, detectors: int) -> torch.Tensor:
    """Symmetric Toeplitz K with y @ K == irfft(rfft(y, padded) * response)[..., :detectors]."""
    kernel = torch.fft.irfft(response, n=padded)  # real and even: response is real and even
    offsets = torch.arange(detectors)
    return kernel[(offsets[:, None] - offsets[None, :]) % padded].contiguous()


class Radon(LinearPhysics):
    """Parallel-beam Radon transform of (B, 1, n, n) images -> sinograms (B, 1, views, detectors).

    Real images give real sinograms; complex images are transformed part by part (real and
    imaginary). H is filtered back-projection:

        H(y) = dtheta * S^T (h * y),   dtheta = angular_range * pi / 180 / views (radians),

    h the ramp (or Hann-windowed ramp) along the detector axis, with transfer function ~|f| for f in
    cycles per pixel. This is the Riemann sum of the continuous inversion
    f(x) = int_0^pi (h * R_theta f)(x . theta) dtheta; FBP of a full 180-view sinogram reproduces
    the image intensity (the mean inside the inscribed circle of a 128 x 128 Shepp-Logan phantom
    is recovered to 0.001%, a disk's interior to 0.01%) and
    equals skimage's `iradon` scale (pi / (2 views) with its filter, which is 2 x ours). For a
    limited range the same weight dtheta is used, so the missing wedge is simply missing.
    H is linear and differentiable (the operator B of the paper's Algorithm 2).
    """

    kind = "radon"
    complex_measurements = False
    #: The paper's Algorithm 2: the attack's gradient goes through FBP (H) instead of A*.
    attack_gradient: ClassVar[str] = "fbp"
    #: Tuned by survey.solvers.tuning (50 views, 1% measurement noise): 33.7 dB vs FBP 29.5 dB
    #: (noiseless: 36.3 vs 32.1).
    reference_defaults: ClassVar[dict] = dict(lam_w=1e-4, lam_tv=3e-4, iterations=200, wavelet="db2", levels=3,
                                              eps=3e-3)
    #: Sweeps move along the number of projection angles over the same angular range.
    sweep_axes: ClassVar[tuple[Axis, ...]] = (Axis("views", integer=True),)

    def __init__(self, size: int = 64, views: int = 50, angular_range: float = 180.0,
                 filter: str = "ramp", detectors: int | None = None):
        size, views, detectors = _check_geometry(size, views, angular_range, detectors)
        filter = "none" if filter is None else filter
        if filter not in FILTERS:
            raise ValueError(f"radon: filter must be one of {FILTERS}, got {filter!r}")
        super().__init__(size)
        self.views = views
        self.angular_range = float(angular_range)
        self.detectors = detectors
        self.filter = filter
        self.angular_step = math.radians(self.angular_range) / views
        self._host = system_matrices(size, views, self.angular_range, detectors)
        # Non-persistent: move with .to(device) but stay out of state_dict (they are rebuilt).
        self.register_buffer("matrix", self._host[0], persistent=False)
        self.register_buffer("matrix_t", self._host[1], persistent=False)
        self._padded, response = fbp_filter(detectors, filter)
        self.register_buffer("filter_response", response, persistent=False)
        self.register_buffer("filter_matrix", _convolution_matrix(response, self._padded, detectors),
                             persistent=False)
        self._casts: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def angles(self) -> np.ndarray:
        """Projection angles in degrees, evenly spaced over [0, angular_range)."""
        return projection_angles(self.views, self.angular_range)

    @property
    def measurement_shape(self) -> tuple[int, int, int]:
        return (1, self.views, self.detectors)

    def describe(self) -> dict:
        return {"kind": self.kind, "size": self.size, "views": self.views,
                "angular_range": self.angular_range, "filter": self.filter, "detectors": self.detectors}

    def at_level(self, axis: str, value: float) -> "Radon":
        """The same geometry with `value` views (this operator itself at its own view count)."""
        self.sweep_axis(axis)
        if value == self.views:
            return self
        params = {k: v for k, v in self.describe().items() if k != "kind"}
        return Radon(**{**params, "views": value}).to(self._device())

    def __reduce__(self):
        # Pickle (Ray, deepcopy) the geometry, not the matrices: the receiver rebuilds or hits the cache.
        params = {k: v for k, v in self.describe().items() if k != "kind"}
        return (_rebuild, (params, str(self.matrix.device)))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.describe().items() if k != "kind")

    def _matrices(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, S^T) in `dtype` on `device`; casts come from the float64 host copy and are cached."""
        if self.matrix.dtype == dtype and self.matrix.device == device:
            return self.matrix, self.matrix_t
        key = (dtype, device)
        if key not in self._casts:
            self._casts[key] = tuple(m.to(device=device, dtype=dtype) for m in self._host)
        return self._casts[key]

    def _apply_matrix(self, flat: torch.Tensor, transpose: bool) -> torch.Tensor:
        """(B, K) -> (B, M) through S (or S^T), keeping the input's dtype and device."""
        matrix, matrix_t = self._matrices(flat.dtype, flat.device)
        if transpose:
            matrix, matrix_t = matrix_t, matrix
        return _SparseProduct.apply(flat.t().contiguous(), matrix, matrix_t).t()

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, n, n) -> sinograms (B, 1, views, detectors)."""
        _check_tensor(x, (1, self.size, self.size), "image")
        if x.is_complex():
            return torch.complex(self.A(x.real), self.A(x.imag))
        out = self._apply_matrix(x.reshape(x.shape[0], -1), transpose=False)
        return out.reshape(x.shape[0], *self.measurement_shape)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Sinograms (B, 1, views, detectors) -> images (B, 1, n, n): exactly S^T."""
        _check_tensor(y, self.measurement_shape, "sinogram")
        if y.is_complex():
            return torch.complex(self.A_adjoint(y.real), self.A_adjoint(y.imag))
        out = self._apply_matrix(y.reshape(y.shape[0], -1), transpose=True)
        return out.reshape(y.shape[0], *self.image_shape)

    def A_finer(self, x: torch.Tensor, factor: int = 2) -> torch.Tensor:
        """Sinograms (B, 1, views, detectors) of images (B, 1, n, n) seen as square pixels of constant
        intensity, projected on a grid `factor` times finer with `factor` sub-rays per detector bin
        (`finer_matrix`): a forward model finer than A, so data made by it and reconstructed with A, H or
        a network trained on A are not an inverse crime. Not differentiable (a data generator)."""
        _check_tensor(x, (1, self.size, self.size), "image")
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"radon: factor must be a positive integer, got {factor!r}")
        if x.is_complex():
            return torch.complex(self.A_finer(x.real, factor), self.A_finer(x.imag, factor))
        fine = x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
        matrix = finer_matrix(self.size, self.views, self.angular_range, self.detectors, factor)
        matrix = matrix.to(device=x.device, dtype=x.dtype)
        with torch.no_grad():
            out = torch.sparse.mm(matrix, fine.reshape(x.shape[0], -1).t().contiguous()).t()
        return out.reshape(x.shape[0], *self.measurement_shape)

    def filtered(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the FBP filter along the detector axis (zero-padded, i.e. linear, convolution).

        The filter is designed in the frequency domain on P >= 2 * detectors points; applying it
        as the equivalent (detectors x detectors) Toeplitz matrix gives the same result as
        rfft -> multiply -> irfft -> crop (checked in the tests) and was faster on CPU here.
        """
        if self.filter == "none":
            return y
        return y @ self.filter_matrix.to(device=y.device, dtype=y.dtype)

    def H(self, y: torch.Tensor) -> torch.Tensor:
        """Filtered back-projection: sinograms (B, 1, views, detectors) -> images (B, 1, n, n)."""
        _check_tensor(y, self.measurement_shape, "sinogram")
        if y.is_complex():
            return torch.complex(self.H(y.real), self.H(y.imag))
        return self.A_adjoint(self.filtered(y)) * self.angular_step


def _integer(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value != int(value) or int(value) < minimum:
        raise ValueError(f"radon: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_geometry(size, views, angular_range, detectors) -> tuple[int, int, int]:
    size, views = _integer("size", size, 2), _integer("views", views, 1)
    if isinstance(angular_range, bool) or not isinstance(angular_range, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(angular_range) <= 180.0:
        raise ValueError(f"radon: angular_range must be in (0, 180] degrees, got {angular_range!r}")
    detectors = default_detectors(size) if detectors is None else _integer("detectors", detectors, 1)
    return size, views, detectors


def _check_tensor(t: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim != 4 or tuple(t.shape[1:]) != tuple(shape):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"radon: {what} must be shaped (B, {', '.join(map(str, shape))}), got {got}")
    if t.dtype not in _REAL_DTYPES + _COMPLEX_DTYPES:
        raise ValueError(f"radon: {what} dtype must be float32/float64/complex64/complex128, got {t.dtype}")


def _rebuild(params: dict, device: str) -> Radon:
    return Radon(**params).to(device)


def build(size: int = 64, views: int = 50, angular_range: float = 180.0, filter: str = "ramp",
          detectors: int | None = None, **unknown) -> Radon:
    """Registry builder: `make_physics("radon", size=64, views=50, angular_range=150)`.

    detectors=None means ceil(sqrt(2) size) (skimage circle=False); detectors=size is skimage's
    circle=True (the image is assumed zero outside the inscribed circle).
    """
    if unknown:
        raise ValueError(f"radon: unknown parameter(s) {sorted(unknown)}; expected size, views, "
                         "angular_range, filter, detectors")
    return Radon(size=size, views=views, angular_range=angular_range, filter=filter, detectors=detectors)
