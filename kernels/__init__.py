"""fastnoise's Triton kernels (installed as ``fastnoise.kernels``).

``philox``: Philox4x32-10 and its uniform/normal mappings (the spec of ``fastnoise.rng``);
``noise_injection``, ``pnil``, ``attack_step``: the fused kernels; ``launch``: block
sizes and grids. The host launchers live in ``fastnoise._backends.triton``.

The kernels call only Triton builtins, never ``@triton.jit`` helpers of Triton's
standard library (``tl.zeros``, ``tl.zeros_like``...): those are decorated when triton
is imported, so with them the interpreter (``TRITON_INTERPRET=1``) could not be switched
on for these modules after triton was imported, as the tests do.

Seed words and offsets are typed parameters (``seed_lo: tl.uint32``, ``offset: tl.int64``)
that are not specialized: Triton would otherwise type an int argument by its value (i32
below 2**31, i64 above) and compile a second kernel for large seeds or offsets.
"""
