"""A numpy stand-in for the small part of PyTorch that check/torch_reference.py's forward pass
uses, so that tests can check the reference's LOTUS arithmetic against the engine on machines
without PyTorch (tests/torch_reference_test.ts). Forward only, CPU only, float32: no autograd,
no devices, no bf16. Not a general torch substitute: it implements exactly what the reference
calls, with torch's semantics for those calls (transpose swaps two dimensions, split takes a
chunk size, any takes keepdim, ...).
"""

import numpy as np

__version__ = "0.0-numpy-shim"
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = long = np.dtype(np.int64)


def _a(x):
    return x.a if isinstance(x, Tensor) else x


class Tensor:
    def __init__(self, a):
        self.a = np.asarray(a)

    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)
    device = property(lambda self: "cpu")
    T = property(lambda self: Tensor(self.a.T))

    def long(self): return Tensor(self.a.astype(np.int64))
    def bool(self): return Tensor(self.a.astype(bool))
    def float(self): return Tensor(self.a.astype(np.float32))
    def to(self, dtype): return Tensor(self.a.astype(dtype))
    def cpu(self): return self
    def numpy(self): return self.a
    def clamp(self, min=None, max=None): return Tensor(np.clip(self.a, min, max))
    def unsqueeze(self, d): return Tensor(np.expand_dims(self.a, d))
    def view(self, *shape): return Tensor(self.a.reshape(shape))
    def reshape(self, *shape): return Tensor(self.a.reshape(shape))
    def transpose(self, i, j): return Tensor(np.swapaxes(self.a, i, j))
    def expand_as(self, o): return Tensor(np.broadcast_to(self.a, o.shape))
    def sum(self): return Tensor(self.a.sum())
    def any(self, dim, keepdim=False): return Tensor(self.a.any(axis=dim, keepdims=keepdim))
    def masked_fill(self, mask, v): return Tensor(np.where(_a(mask), self.a.dtype.type(v), self.a))

    def split(self, size, dim):
        n = self.a.shape[dim]
        return [Tensor(np.take(self.a, np.arange(i, min(n, i + size)), axis=dim))
                for i in range(0, n, size)]

    def softmax(self, dim):
        z = self.a - self.a.max(axis=dim, keepdims=True)
        e = np.exp(z)
        return Tensor((e / e.sum(axis=dim, keepdims=True)).astype(self.a.dtype))

    def __getitem__(self, idx):
        idx = tuple(_a(i) for i in idx) if isinstance(idx, tuple) else _a(idx)
        return Tensor(self.a[idx])

    def __float__(self): return float(self.a)
    def __int__(self): return int(self.a)
    def __invert__(self): return Tensor(~self.a)

    def _op(f):
        return lambda self, o: Tensor(f(self.a, _a(o)))

    __add__ = _op(lambda a, b: a + b)
    __radd__ = _op(lambda a, b: b + a)
    __sub__ = _op(lambda a, b: a - b)
    __rsub__ = _op(lambda a, b: b - a)
    __mul__ = _op(lambda a, b: a * b)
    __rmul__ = _op(lambda a, b: b * a)
    __truediv__ = _op(lambda a, b: a / b)
    __matmul__ = _op(lambda a, b: a @ b)
    __and__ = _op(lambda a, b: a & b)
    __eq__ = _op(lambda a, b: a == b)
    __ge__ = _op(lambda a, b: a >= b)
    __gt__ = _op(lambda a, b: a > b)
    __le__ = _op(lambda a, b: a <= b)
    __lt__ = _op(lambda a, b: a < b)
    __hash__ = None


def tensor(a, device=None, dtype=None):
    return Tensor(np.array(a, dtype=dtype))


def arange(n, device=None):
    return Tensor(np.arange(n))


def cat(ts, dim):
    return Tensor(np.concatenate([_a(t) for t in ts], axis=dim))


def where(c, x, y):
    x, y = _a(x), _a(y)
    dt = x.dtype if isinstance(x, np.ndarray) else y.dtype
    return Tensor(np.where(_a(c), x, y).astype(dt))


def zeros(shape=(), dtype=None, device=None):
    return Tensor(np.zeros(shape, dtype or np.float32))


def full_like(t, v):
    return Tensor(np.full_like(_a(t), v))


class finfo:
    def __init__(self, dtype):
        self.min = np.finfo(dtype).min


class no_grad:
    def __enter__(self): return self
    def __exit__(self, *exc): return False


class cuda:
    @staticmethod
    def is_available(): return False


class backends:
    class cuda:
        class matmul:
            allow_tf32 = False

    class cudnn:
        allow_tf32 = False
