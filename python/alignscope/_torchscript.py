"""Loading TorchScript model files that come from somebody else.

A TorchScript file is not a pickle, but it is a program: its methods may call any operator torch
registers, and some of those touch the machine (``aten::from_file`` maps any file into a tensor,
readable and, with ``shared=True``, writable; ``prim::Print`` writes to stdout; custom
namespaces reach whatever extension is loaded), and a ``__setstate__`` method runs while the
file loads. An "SSCD model" built that way read a private file into an embedding store and
wrote outside ``--out``. So before a file's code runs:

1. the archive's serialized code is read as text (zip members ``*/code/*.py``) and a file that
   defines ``__setstate__`` is refused, because that method would run inside ``torch.jit.load``;
2. after loading, every method of every submodule is inlined and each graph node's operator is
   checked against :data:`ALLOWED_OPS`, an allow-list of pure tensor and TorchScript language
   operators (taken from the graphs of torchvision's classifiers, scripted and traced, plus
   their elementwise relatives); anything else is refused with the operator and method named.

``trust=True`` (CLI ``--trust-models``) skips both checks for files the user vouches for.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

# Language operators of TorchScript itself (control flow, containers, attributes, casts).
_PRIM = {
    "Constant", "GetAttr", "SetAttr", "If", "Loop", "ListConstruct", "ListUnpack",
    "TupleConstruct", "TupleIndex", "TupleUnpack", "DictConstruct", "RaiseException",
    "Uninitialized", "unchecked_cast", "unchecked_unwrap_optional", "device", "dtype", "layout",
    "is_nested", "is_cuda", "is_mps", "is_xpu", "requires_grad", "type", "NumToTensor",
    "min", "max", "abs", "shape", "isinstance", "data", "TupleSlice", "ListIndex",
    "ConstantChunk", "Guard", "BailOut", "CallMethod", "CallFunction", "EnumValue", "EnumName",
    "AutogradZero", "name", "StringIndex",
}  # fmt: skip
# Builtin operators TorchScript lowers Python syntax to (numbers, strings, lists, dicts).
_BUILTIN = {
    "__getitem__", "_set_item", "__contains__", "__is__", "__isnot__", "__not__", "__and__",
    "__or__", "__xor__", "__lshift__", "__rshift__", "__round_to_zero_floordiv", "len",
    "append", "extend", "insert", "pop", "list", "keys", "values", "items", "get", "copy",
    "format", "str", "join", "split", "strip", "startswith", "endswith", "lower", "upper",
    "replace", "Int", "Float", "Bool", "ScalarImplicit", "IntImplicit", "FloatImplicit",
    "floordiv", "floor", "ceil", "remainder", "__range_length", "__derive_index", "dim",
    "size", "numel", "is_floating_point", "is_complex", "is_grad_enabled",
    "is_autocast_enabled", "warn", "sorted", "sort", "reverse", "clear", "index", "count",
    "divmod", "log", "sqrt", "exp", "mathremainder", "ne", "eq", "lt", "le", "gt", "ge",
    "add", "sub", "mul", "div", "neg", "pow", "min", "max", "abs",
}  # fmt: skip
# Tensor operators: arithmetic, elementwise functions, reductions, shapes, indexing, creation,
# and the layers of vision networks (convolution, normalisation, pooling, attention).
_TENSOR = {
    # arithmetic and comparison
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "true_divide",
    "floor_divide", "remainder", "fmod", "neg", "reciprocal", "pow", "pow_", "abs", "sign",
    "eq", "ne", "lt", "le", "gt", "ge", "maximum", "minimum", "clamp", "clamp_", "clamp_min",
    "clamp_min_", "clamp_max", "clamp_max_", "where", "logical_and", "logical_or",
    "logical_not", "bitwise_and", "bitwise_or", "bitwise_not", "isnan", "isfinite", "isinf",
    "nan_to_num", "lerp", "addcmul", "addcdiv", "round", "floor", "ceil", "trunc", "frac",
    # elementwise functions and activations
    "exp", "exp_", "log", "log_", "log2", "log10", "log1p", "expm1", "sqrt", "rsqrt", "square",
    "sin", "cos", "tan", "tanh", "tanh_", "sinh", "cosh", "asin", "acos", "atan", "atan2",
    "erf", "erfc", "erfinv", "sigmoid", "sigmoid_", "logit", "relu", "relu_", "relu6",
    "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu", "gelu_", "silu",
    "silu_", "mish", "hardtanh", "hardtanh_", "hardsigmoid", "hardsigmoid_", "hardswish",
    "hardswish_", "softplus", "softsign", "prelu", "glu", "threshold", "threshold_",
    "softmax", "log_softmax", "_softmax", "_log_softmax",
    # reductions
    "sum", "mean", "std", "var", "var_mean", "std_mean", "prod", "amax", "amin", "argmax",
    "argmin", "max", "min", "norm", "linalg_vector_norm", "logsumexp", "cumsum", "all", "any",
    "topk", "sort", "argsort", "median", "frobenius_norm",
    # shapes, views and copies
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze", "squeeze_",
    "unsqueeze", "unsqueeze_", "permute", "transpose", "transpose_", "t", "contiguous",
    "expand", "expand_as", "repeat", "repeat_interleave", "tile", "flip", "roll", "chunk",
    "split", "split_with_sizes", "unbind", "narrow", "movedim", "swapaxes", "clone", "copy",
    "copy_", "detach", "detach_", "to", "type_as", "float", "half", "bfloat16", "double",
    "long", "int", "bool", "size", "dim", "numel", "stride", "is_contiguous", "item",
    "_unsafe_view", "alias", "new_zeros", "new_ones", "new_full", "new_empty", "fill_",
    "zero_", "masked_fill", "masked_fill_", "index_fill", "index_select", "gather", "scatter",
    "scatter_add", "take_along_dim", "index", "index_put", "index_put_", "select", "slice",
    "cat", "concat", "stack", "hstack", "vstack", "diagonal", "tril", "triu", "einsum",
    # creation (in memory only)
    "zeros", "ones", "full", "empty", "zeros_like", "ones_like", "full_like", "empty_like",
    "arange", "linspace", "tensor", "scalar_tensor", "as_tensor", "eye", "rand", "randn",
    "rand_like", "randn_like", "bernoulli", "bernoulli_", "randint", "normal",
    # linear algebra and layers
    "matmul", "mm", "bmm", "addmm", "baddbmm", "linear", "conv1d", "conv2d", "conv3d",
    "conv_transpose1d", "conv_transpose2d", "_convolution", "batch_norm", "layer_norm",
    "group_norm", "instance_norm", "native_layer_norm", "rms_norm", "dropout", "dropout_",
    "feature_dropout", "alpha_dropout", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d",
    "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_max_pool2d", "upsample_nearest2d", "upsample_bilinear2d", "upsample_bicubic2d",
    "interpolate", "pad", "constant_pad_nd", "reflection_pad2d", "replicate_pad2d",
    "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "embedding", "cosine_similarity",
    "normalize", "scaled_dot_product_attention", "_native_multi_head_attention",
    "grid_sampler", "grid_sample", "affine_grid_generator", "one_hot", "outer", "dot",
}  # fmt: skip
ALLOWED_OPS: frozenset[str] = frozenset(
    {f"prim::{n}" for n in _PRIM} | {f"aten::{n}" for n in _BUILTIN | _TENSOR}
)
# Serialized code larger than this is refused before it is read (a zip bomb in the code dir).
MAX_CODE_BYTES = 64 * 2**20
_SETSTATE = re.compile(r"\bdef\s+__setstate__\s*\(")


class UntrustedModel(ValueError):
    """A model file refused by the checks above (the message names the file and the reason)."""


def _refuse(path: Path, reason: str) -> UntrustedModel:
    return UntrustedModel(
        f"model file {str(path)!r}: {reason}; alignscope runs only TorchScript made of pure "
        "tensor operators. If you trust this file, pass --trust-models (trust_models=True)"
    )


def check_archive(path: str | Path) -> None:
    """Refuse, without loading it, a TorchScript archive whose code runs on load.

    Raises
    ------
    UntrustedModel : not a TorchScript zip archive, code too large, or a ``__setstate__``.
    """
    file = Path(path)
    try:
        with zipfile.ZipFile(file) as archive:
            code = [
                i
                for i in archive.infolist()
                if "/code/" in i.filename and i.filename.endswith(".py")
            ]
            if not code:
                raise _refuse(file, "not a TorchScript archive (no serialized code)")
            if sum(i.file_size for i in code) > MAX_CODE_BYTES:
                raise _refuse(file, f"serialized code larger than {MAX_CODE_BYTES} bytes")
            for info in code:
                text = archive.read(info).decode("utf-8", errors="replace")
                if _SETSTATE.search(text):
                    raise _refuse(
                        file, f"{info.filename} defines __setstate__, which would run on load"
                    )
    except UntrustedModel:
        raise
    except Exception as exc:  # zipfile raises many kinds on damaged archives (found by fuzzing)
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise UntrustedModel(
            f"model file {str(file)!r} is not a readable TorchScript archive "
            f"({type(exc).__name__}: {first})"
        ) from exc


def _walk(block: Any, found: dict[str, str], where: str) -> None:
    for node in block.nodes():
        found.setdefault(node.kind(), where)
        for inner in node.blocks():
            _walk(inner, found, where)


def operators(module: Any) -> dict[str, str]:
    """Every operator that any method of ``module`` or its submodules can run, with the first
    method ("submodule.method") found using it; calls are inlined so helpers count too."""
    import torch

    found: dict[str, str] = {}
    for name, sub in module.named_modules():
        for method in sub._c._method_names():
            graph = sub._c._get_method(method).graph.copy()
            torch._C._jit_pass_inline(graph)
            _walk(graph, found, f"{name + '.' if name else ''}{method}")
    return found


def load_torchscript(path: str | Path, device: str = "cpu", *, trust: bool = False) -> Any:
    """A TorchScript module in eval mode, checked as described above unless ``trust``.

    Parameters
    ----------
    path : the ``.pt`` / ``.torchscript`` file.
    device : torch device string for ``map_location``.
    trust : skip the archive and operator checks (the user vouches for the file).

    Raises
    ------
    ValueError : missing file, unreadable archive (one line naming the file);
        :class:`UntrustedModel` for a refused file.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"model file {str(file)!r} does not exist")
    try:
        import torch
    except ImportError as exc:
        raise ValueError("TorchScript models need torch: pip install torch") from exc
    if not trust:
        check_archive(file)
    try:
        with warnings.catch_warnings():
            # torch deprecates TorchScript, but published models (SSCD) ship in it
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(file), map_location=device)
    except Exception as exc:  # torch raises RuntimeError and others with C++ backtraces
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"model file {str(file)!r} cannot be loaded as TorchScript: {first}"
        ) from exc
    if not trust:
        bad = {op: where for op, where in operators(module).items() if op not in ALLOWED_OPS}
        if bad:
            op, where = sorted(bad.items())[0]
            more = (
                f" (and {len(bad) - 1} more: {', '.join(sorted(bad)[1:4])})" if len(bad) > 1 else ""
            )
            raise _refuse(file, f"method {where} uses operator {op}{more}")
    return module.eval()
