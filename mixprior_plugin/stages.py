"""Stage adapters: view an SR network as head -> K body stages -> tail.

Distillation needs two things from a network, without touching its code:

* the features at the stage boundaries of an ordinary forward pass (taken by forward hooks,
  :class:`FeatureRecorder`), and
* for MiPKD's Block Prior Mixer, running any contiguous range of stages on a given feature and
  then the tail (:meth:`StageAdapter.run_stages`, :meth:`StageAdapter.run_tail`).

A *block* is one element of the network's body (EDSR: ResidualBlockNoBN, RCAN: ResidualGroup,
SwinIR: RSTB). A *stage* is a run of consecutive blocks; ``stage_ends`` lists, for each stage, the
1-based index of the block that ends it (EDSR 32 blocks in 4 stages: ``[8, 16, 24, 32]``). The last
stage always ends at the last block. Features at boundaries are maps ``(N, C, H, W)`` at LR size;
SwinIR's tokens ``(N, H*W, C)`` are reshaped.

:func:`build_adapter` picks the adapter from the arch's class (EDSR, RCAN, SwinIR, SRVGGNetCompact) or
from an explicit ``distill.adapter_t`` / ``distill.adapter_g`` dict (``type: SequentialBodyAdapter``,
with module paths) for any other arch whose body is a sequence of blocks. Each adapter's staged forward
is checked against the network's own forward (:meth:`StageAdapter.check_matches_forward`).
"""
from functools import reduce

import torch
from torch import nn
from torch.nn import functional as F

from mixprior_plugin.utils.options import OptionError


def get_submodule(net, path):
    """``net.a.b.0`` style lookup with an error that names the missing path."""
    try:
        return reduce(lambda m, name: m[int(name)] if name.isdigit() else getattr(m, name), path.split('.'), net)
    except (AttributeError, IndexError, TypeError) as err:
        raise OptionError(f'{net.__class__.__name__} has no submodule {path!r}') from err


def split_equal(num_blocks, num_stages):
    """Stage ends for an (as) equal (as possible) split of ``num_blocks`` into ``num_stages``."""
    return [round(num_blocks * (k + 1) / num_stages) for k in range(num_stages)]


class StageAdapter:
    """Base class. Subclasses define where the blocks are and how to run head, blocks and tail.

    Args:
        net (nn.Module): The (bare) network.
        stage_ends (list[int]): 1-based index of the block ending each stage.
        key (str): Option key naming this network in errors (e.g. ``distill.stages_t``).
    """

    def __init__(self, net, stage_ends, key='distill.stages'):
        self.net = net
        self.key = key
        n = len(self.blocks)
        ends = [int(e) for e in stage_ends]
        if not ends:
            raise OptionError(f'{key}: at least one stage is needed')
        if any(e < 1 or e > n for e in ends):
            raise OptionError(f'{key}={ends}: stage ends must lie in 1..{n} '
                              f'({net.__class__.__name__} has {n} body blocks)')
        if any(b <= a for a, b in zip(ends, ends[1:])):
            raise OptionError(f'{key}={ends}: stage ends must be strictly increasing')
        if ends[-1] != n:
            raise OptionError(f'{key}={ends}: the last stage must end at the last block ({n})')
        self.stage_ends = ends

    # ---- where things are (subclasses) -------------------------------------------------------
    @property
    def blocks(self):
        """list[nn.Module]: The body blocks, in order."""
        raise NotImplementedError

    @property
    def head_module(self):
        """nn.Module: The module whose output is the head feature (used by the global residual)."""
        raise NotImplementedError

    @property
    def channels(self):
        """int: Channels of the body features (the arch's ``num_feat`` or ``embed_dim``, as BasicSR names them)."""
        for name in ('num_feat', 'embed_dim'):
            if isinstance(getattr(self.net, name, None), int):
                return getattr(self.net, name)
        raise NotImplementedError

    @property
    def num_stages(self):
        return len(self.stage_ends)

    @property
    def boundary_modules(self):
        """list[nn.Module]: The block ending each stage."""
        return [self.blocks[e - 1] for e in self.stage_ends]

    def stage_blocks(self, k):
        """Block index range ``range(start, end)`` (0-based) of stage ``k`` (0-based)."""
        start = 0 if k == 0 else self.stage_ends[k - 1]
        return range(start, self.stage_ends[k])

    def to_map(self, block_output, block_inputs):
        """Turn a block's output (as seen by a forward hook) into a map ``(N, C, H, W)``."""
        return block_output

    # ---- staged execution (subclasses) -------------------------------------------------------
    def run_head(self, x):
        """Run input normalisation and the head.

        Args:
            x (Tensor): LR input ``(N, 3, h, w)``.

        Returns:
            tuple[Tensor, dict]: Head feature ``(N, C, h, w)`` and a context for the later calls.
        """
        raise NotImplementedError

    def run_blocks(self, feat, start, end, ctx):
        """Run blocks ``start..end-1`` (0-based) on a map ``(N, C, H, W)``; returns a map."""
        raise NotImplementedError

    def run_tail(self, feat, head_feat, ctx):
        """Run the tail on the last stage's map; ``head_feat`` feeds the global residual."""
        raise NotImplementedError

    # ---- generic -----------------------------------------------------------------------------
    def run_stages(self, feat, first, last, ctx):
        """Run stages ``first..last`` (0-based, inclusive) on a map."""
        start = self.stage_blocks(first).start
        end = self.stage_blocks(last).stop
        return self.run_blocks(feat, start, end, ctx)

    def forward_staged(self, x):
        """The whole network run stage by stage.

        Returns:
            tuple[Tensor, Tensor, list[Tensor]]: Output, head feature, the K stage features.
        """
        head, ctx = self.run_head(x)
        feats, feat = [], head
        for k in range(self.num_stages):
            feat = self.run_stages(feat, k, k, ctx)
            feats.append(feat)
        return self.run_tail(feat, head, ctx), head, feats

    def check_matches_forward(self, lq_size=16, atol=1e-4):
        """Check that the staged forward reproduces ``net(x)``; raise if it does not.

        Catches an adapter applied to an arch whose forward differs from what it assumes.
        """
        param = next(self.net.parameters())
        x = torch.rand(1, self.in_channels, lq_size, lq_size, device=param.device, dtype=param.dtype)
        was_training = self.net.training
        self.net.eval()
        with torch.no_grad():
            ref = self.net(x)
            out = self.forward_staged(x)[0]
        self.net.train(was_training)
        if ref.shape != out.shape or not torch.allclose(ref, out, atol=atol * max(1.0, ref.abs().max().item())):
            raise OptionError(f'{self.key}: {type(self).__name__} does not reproduce '
                              f'{self.net.__class__.__name__}.forward; configure the adapter explicitly')

    @property
    def in_channels(self):
        """int: Input channels (the arch's ``num_in_ch``, else its first convolution's, else 3)."""
        if isinstance(getattr(self.net, 'num_in_ch', None), int):
            return self.net.num_in_ch
        head = self.net.conv_first if hasattr(self.net, 'conv_first') else None
        return head.in_channels if isinstance(head, nn.Conv2d) else 3


class SequentialBodyAdapter(StageAdapter):
    """Adapter for ``x -> head -> body blocks -> body_end (+ head) -> tail`` networks.

    EDSR and RCAN have exactly this form; other archs can use it through options::

        distill:
          adapter_g: {type: SequentialBodyAdapter, head: conv_first, blocks: body,
                      body_end: [conv_after_body], residual: true, tail: [upsample, conv_last]}

    Args:
        net (nn.Module): Network.
        stage_ends (list[int]): See :class:`StageAdapter`.
        key (str): Option key for errors.
        head (str): Path of the head module (its output is the head feature).
        blocks (str): Path of the body (an nn.Sequential / nn.ModuleList of blocks).
        body_end (list[str]): Modules applied after the last block, before the residual.
        residual (bool): Whether the head feature is added after ``body_end``.
        tail (list[str] | None): Modules from the body feature to the output. None: the adapter
            can record features but not run stages (enough for feature-KD baselines).
        input_norm (bool): Apply ``(x - net.mean) * net.img_range`` before the head and the
            inverse after the tail, as BasicSR's EDSR/RCAN/SwinIR do.
    """

    def __init__(self, net, stage_ends, key='distill.stages', head='conv_first', blocks='body',
                 body_end=('conv_after_body', ), residual=True, tail=('upsample', 'conv_last'),
                 input_norm=True):
        self._head = get_submodule(net, head)
        self._blocks = list(get_submodule(net, blocks))
        self._body_end = [get_submodule(net, p) for p in (body_end or [])]
        self._tail = None if tail is None else [get_submodule(net, p) for p in tail]
        self.residual = residual
        self.input_norm = input_norm
        super().__init__(net, stage_ends, key)

    @property
    def blocks(self):
        return self._blocks

    @property
    def head_module(self):
        return self._head

    @property
    def channels(self):
        conv = self._head if isinstance(self._head, nn.Conv2d) else None
        if conv is None:
            raise OptionError(f'{self.key}: cannot infer the feature width of {self.net.__class__.__name__}')
        return conv.out_channels

    def _normalise(self, x):
        if not self.input_norm:
            return x
        return (x - self.net.mean.type_as(x)) * self.net.img_range

    def _denormalise(self, x):
        if not self.input_norm:
            return x
        return x / self.net.img_range + self.net.mean.type_as(x)

    def run_head(self, x):
        return self._head(self._normalise(x)), {}

    def run_blocks(self, feat, start, end, ctx):
        for block in self._blocks[start:end]:
            feat = block(feat)
        return feat

    def run_tail(self, feat, head_feat, ctx):
        if self._tail is None:
            raise OptionError(f'{self.key}: the adapter of {self.net.__class__.__name__} has no tail; '
                              'set its `tail` module list to run stages (needed by the block path)')
        for m in self._body_end:
            feat = m(feat)
        if self.residual:
            feat = feat + head_feat
        for m in self._tail:
            feat = m(feat)
        return self._denormalise(feat)


class EDSRAdapter(SequentialBodyAdapter):
    """BasicSR EDSR: blocks are ``body`` (ResidualBlockNoBN)."""


class RCANAdapter(SequentialBodyAdapter):
    """BasicSR RCAN: blocks are the residual groups of ``body``."""


class SwinIRAdapter(StageAdapter):
    """BasicSR SwinIR (upsampler 'pixelshuffle' or 'pixelshuffledirect'): blocks are the RSTBs.

    The first stage includes the patch embedding (flatten + LayerNorm), the tail includes the
    final LayerNorm. Between stages features are maps; a stage flattens them to tokens
    ``(N, H*W, C)`` and back. Inputs must be multiples of ``window_size`` (training patches are;
    KD models pad at test time).
    """

    SUPPORTED_UPSAMPLERS = ('pixelshuffle', 'pixelshuffledirect')

    def __init__(self, net, stage_ends, key='distill.stages'):
        if net.upsampler not in self.SUPPORTED_UPSAMPLERS:
            raise OptionError(f'{key}: SwinIR upsampler {net.upsampler!r} is not supported for distillation '
                              f'(supported: {self.SUPPORTED_UPSAMPLERS})')
        super().__init__(net, stage_ends, key)

    @property
    def blocks(self):
        return list(self.net.layers)

    @property
    def head_module(self):
        return self.net.conv_first

    @property
    def window_size(self):
        return self.net.layers[0].residual_group.blocks[0].window_size

    def to_map(self, block_output, block_inputs):
        h, w = block_inputs[1]
        return block_output.transpose(1, 2).reshape(block_output.shape[0], -1, h, w)

    def run_head(self, x):
        x = (x - self.net.mean.type_as(x)) * self.net.img_range
        return self.net.conv_first(x), {}

    def run_blocks(self, feat, start, end, ctx):
        n, _, h, w = feat.shape
        if start == 0:
            tokens = self.net.patch_embed(feat)
            if self.net.ape:
                tokens = tokens + self.net.absolute_pos_embed
            tokens = self.net.pos_drop(tokens)
        else:
            tokens = feat.flatten(2).transpose(1, 2)
        for layer in self.net.layers[start:end]:
            tokens = layer(tokens, (h, w))
        return tokens.transpose(1, 2).reshape(n, -1, h, w)

    def run_tail(self, feat, head_feat, ctx):
        net = self.net
        n, _, h, w = feat.shape
        tokens = net.norm(feat.flatten(2).transpose(1, 2))
        x = net.patch_unembed(tokens, (h, w))
        x = net.conv_after_body(x) + head_feat
        if net.upsampler == 'pixelshuffle':
            x = net.conv_last(net.upsample(net.conv_before_upsample(x)))
        else:
            x = net.upsample(x)
        return x / net.img_range + net.mean.type_as(x)

    def check_matches_forward(self, lq_size=None, atol=1e-4):
        super().check_matches_forward(lq_size=lq_size or 2 * self.window_size, atol=atol)


class SRVGGNetCompactAdapter(StageAdapter):
    """BasicSR's SRVGGNetCompact (Real-ESRGAN's compact arch): a flat ``body`` of conv/activation pairs.

    ``body`` is ``[conv_first, act, (conv, act) x num_conv, conv_last]`` and the forward runs it
    element by element, pixel-shuffles, and adds the nearest-upsampled input. Here the head is
    ``conv_first`` + its activation, a *block* is one ``(conv, act)`` pair of the body (``num_conv``
    blocks), and the tail is ``conv_last``, the pixel shuffle and the upsampled input (which
    ``run_tail`` reads from ``ctx['lq']``). Stage features are the activation outputs that end each
    stage, recorded by hooks on those activation modules.
    """

    @property
    def blocks(self):
        body = self.net.body
        return [(body[2 + 2 * i], body[3 + 2 * i]) for i in range(self.net.num_conv)]

    @property
    def boundary_modules(self):
        return [self.blocks[e - 1][1] for e in self.stage_ends]

    @property
    def head_module(self):
        return self.net.body[1]

    def run_head(self, x):
        return self.net.body[1](self.net.body[0](x)), dict(lq=x)

    def run_blocks(self, feat, start, end, ctx):
        for conv, act in self.blocks[start:end]:
            feat = act(conv(feat))
        return feat

    def run_tail(self, feat, head_feat, ctx):
        if 'lq' not in ctx:
            raise ValueError('SRVGGNetCompactAdapter.run_tail needs the LR input in ctx["lq"]')
        out = self.net.upsampler(self.net.body[-1](feat))
        return out + F.interpolate(ctx['lq'], scale_factor=self.net.upscale, mode='nearest')


class _StopForward(Exception):
    """Raised by :class:`_BodyCapture` to end a forward pass once the body's input is known."""


class _BodyCapture(nn.Module):
    """Stands in for a body: records its input and stops the forward pass."""

    def forward(self, x):
        self.captured = x
        raise _StopForward


class _BodyInject(nn.Module):
    """Stands in for a body: ignores its input and returns a given feature."""

    def __init__(self, feat):
        super().__init__()
        self.feat = feat

    def forward(self, x):
        return self.feat


class GenericBodyAdapter(StageAdapter):
    """Adapter for any arch whose forward calls one sequential body once (``x -> ... -> body -> ...``).

    The head and the tail are whatever the network's own forward does before and after the body,
    so nothing about them is assumed: to run the tail on a feature, the network's forward is
    called on the LR input with the body swapped for a module that returns that feature (the
    head's few convolutions run again; global residuals, interpolated bases and pixel
    (un)shuffles are the network's own). BasicSR's RRDBNet (ESRGAN) and MSRResNet work this way,
    as does any arch with a ``body`` ``nn.Sequential``; the check against the real forward
    (:meth:`StageAdapter.check_matches_forward`) catches an arch that does something else.

    Args:
        net (nn.Module): Network.
        stage_ends (list[int]): See :class:`StageAdapter`.
        key (str): Option key for errors.
        blocks (str): Path of the body (an nn.Sequential of blocks). Default: 'body'.
        in_channels (int): Channels of the network's input. Default: 3.
    """

    def __init__(self, net, stage_ends, key='distill.stages', blocks='body', in_channels=3):
        self._blocks_path = blocks
        self._body = get_submodule(net, blocks)
        if not isinstance(self._body, (nn.Sequential, nn.ModuleList)):
            raise OptionError(f'{key}: {net.__class__.__name__}.{blocks} is a {type(self._body).__name__}, not a '
                              'sequence of blocks (nn.Sequential)')
        parent, _, self._body_name = blocks.rpartition('.')
        self._parent = get_submodule(net, parent) if parent else net
        self._in_channels = in_channels
        self._channels = None
        super().__init__(net, stage_ends, key)

    @property
    def blocks(self):
        return list(self._body)

    @property
    def head_module(self):
        """None: the tail recomputes the head from the input, so no head feature is recorded."""
        return None

    @property
    def in_channels(self):
        return self._in_channels

    @property
    def channels(self):
        if self._channels is None:
            param = next(self.net.parameters())
            x = torch.zeros(1, self._in_channels, 16, 16, device=param.device, dtype=param.dtype)
            with torch.no_grad():
                self._channels = self.run_head(x)[0].shape[1]
        return self._channels

    def _swapped_forward(self, x, stand_in):
        original = getattr(self._parent, self._body_name)
        setattr(self._parent, self._body_name, stand_in)
        try:
            return self.net(x)
        except _StopForward:
            raise
        except Exception as err:  # the forward does more with the body than call it (e.g. indexes it)
            adapter_key = self.key.replace('stages', 'adapter')
            raise OptionError(f'{adapter_key}: GenericBodyAdapter cannot run {self.net.__class__.__name__}.forward '
                              f'with {self._blocks_path} swapped for a stand-in ({err.__class__.__name__}: {err}): '
                              f'that forward uses {self._blocks_path} otherwise than calling it once; set '
                              f'{adapter_key} to an adapter written for the arch (SRVGGNetCompact has one, picked '
                              'when distill.adapter_* is not set; docs/usage.md, "Any teacher, any student")') from err
        finally:
            setattr(self._parent, self._body_name, original)

    def run_head(self, x):
        capture = _BodyCapture()
        try:
            self._swapped_forward(x, capture)
        except _StopForward:
            return capture.captured, dict(lq=x)
        raise OptionError(f'{self.key}: {self.net.__class__.__name__}.forward never calls {self._blocks_path}')

    def run_blocks(self, feat, start, end, ctx):
        for block in self.blocks[start:end]:
            feat = block(feat)
        return feat

    def run_tail(self, feat, head_feat, ctx):
        if 'lq' not in ctx:
            raise ValueError('GenericBodyAdapter.run_tail needs the LR input in ctx["lq"]')
        return self._swapped_forward(ctx['lq'], _BodyInject(feat))


ADAPTERS = {'EDSR': EDSRAdapter, 'RCAN': RCANAdapter, 'SwinIR': SwinIRAdapter,
            'SRVGGNetCompact': SRVGGNetCompactAdapter}
CUSTOM_ADAPTERS = {'SequentialBodyAdapter': SequentialBodyAdapter, 'GenericBodyAdapter': GenericBodyAdapter,
                   'SRVGGNetCompactAdapter': SRVGGNetCompactAdapter}

# Default number of stages per family when distill.num_stages is not set (docs/method.md; options_schema).
DEFAULT_NUM_STAGES = {'EDSR': 4, 'RCAN': 5, 'SwinIR': 2}


def num_body_blocks(net, adapter_opt=None):
    """Number of body blocks of ``net`` (as the adapter would see them)."""
    if adapter_opt and adapter_opt.get('type') == 'SRVGGNetCompactAdapter':
        return net.num_conv
    if adapter_opt:
        return len(list(get_submodule(net, adapter_opt.get('blocks', 'body'))))
    name = net.__class__.__name__
    if name == 'SwinIR':
        return len(net.layers)
    if name == 'SRVGGNetCompact':
        return net.num_conv
    if name in ADAPTERS or _has_sequential_body(net):
        return len(net.body)
    raise OptionError(f'No stage adapter for {name}: set distill.adapter_t / distill.adapter_g '
                      '(type: GenericBodyAdapter or SequentialBodyAdapter, with module paths)')


def _has_sequential_body(net):
    return isinstance(getattr(net, 'body', None), nn.Sequential)


def build_adapter(net, stage_ends, adapter_opt=None, key='distill.stages'):
    """Build the stage adapter for ``net``.

    Args:
        net (nn.Module): Bare network.
        stage_ends (list[int]): 1-based block index ending each stage.
        adapter_opt (dict | None): Explicit adapter options (``type`` + kwargs); None picks the
            adapter from the arch's class name.
        key (str): Option key for errors.
    """
    if adapter_opt:
        adapter_opt = dict(adapter_opt)
        kind = adapter_opt.pop('type', 'SequentialBodyAdapter')
        if kind not in CUSTOM_ADAPTERS:
            raise OptionError(f'{key}: unknown adapter type {kind!r} (known: {sorted(CUSTOM_ADAPTERS)})')
        return CUSTOM_ADAPTERS[kind](net, stage_ends, key=key, **adapter_opt)
    name = net.__class__.__name__
    if name in ADAPTERS:
        return ADAPTERS[name](net, stage_ends, key=key)
    if _has_sequential_body(net):
        return GenericBodyAdapter(net, stage_ends, key=key)
    raise OptionError(f'No stage adapter for {name}: set distill.adapter_t / distill.adapter_g '
                      '(type: GenericBodyAdapter or SequentialBodyAdapter, with module paths)')


class FeatureRecorder:
    """Records the head feature and the stage-boundary features of ordinary forward passes.

    Forward hooks on the adapter's head module and boundary blocks (torchdistill-style): the
    network's own forward runs unchanged, through DDP if wrapped.

    Args:
        adapter (StageAdapter): Adapter of the network to watch.
    """

    def __init__(self, adapter):
        self.adapter = adapter
        self.head = None
        self.features = [None] * adapter.num_stages
        head = adapter.head_module
        self._handles = [head.register_forward_hook(self._record_head)] if head is not None else []
        for k, module in enumerate(adapter.boundary_modules):
            self._handles.append(module.register_forward_hook(self._make_hook(k)))

    def _record_head(self, module, inputs, output):
        self.head = output

    def _make_hook(self, k):

        def hook(module, inputs, output):
            self.features[k] = self.adapter.to_map(output, inputs)

        return hook

    def clear(self):
        self.head = None
        self.features = [None] * self.adapter.num_stages

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []



def resolve_stage_ends(distill_opt, net_t, net_g):
    """Stage ends of teacher and student from ``distill`` options.

    ``stages_t`` / ``stages_g`` give them explicitly; otherwise ``num_stages`` (or the family
    default) splits each body equally.

    Returns:
        tuple[list[int], list[int]]: Teacher and student stage ends.
    """
    distill_opt = distill_opt or {}
    n_t = num_body_blocks(net_t, distill_opt.get('adapter_t'))
    n_g = num_body_blocks(net_g, distill_opt.get('adapter_g'))
    k = distill_opt.get('num_stages')
    if k is None:
        k_t = DEFAULT_NUM_STAGES.get(net_t.__class__.__name__)
        k_g = DEFAULT_NUM_STAGES.get(net_g.__class__.__name__)
        k = min(v for v in (k_t, k_g) if v is not None) if (k_t or k_g) else None
    ends = {}
    for side, n, net in (('t', n_t, net_t), ('g', n_g, net_g)):
        explicit = distill_opt.get(f'stages_{side}')
        if explicit is not None:
            if not isinstance(explicit, (list, tuple)) or not all(isinstance(e, int) for e in explicit):
                raise OptionError(f'distill.stages_{side} must be a list of block indices, got {explicit!r}')
            ends[side] = list(explicit)
        else:
            if k is None:
                raise OptionError(f'distill.num_stages is needed for {net.__class__.__name__} '
                                  '(or give distill.stages_t and distill.stages_g)')
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise OptionError(f'distill.num_stages must be a positive integer, got {k!r}')
            if k > n:
                raise OptionError(f'distill.num_stages={k} exceeds the {n} body blocks of '
                                  f'{"teacher" if side == "t" else "student"} {net.__class__.__name__}: set '
                                  f'distill.num_stages <= {min(n_t, n_g)}, or give distill.stages_t and '
                                  'distill.stages_g (block indices ending each stage, equally many)')
            ends[side] = split_equal(n, k)
    if len(ends['t']) != len(ends['g']):
        raise OptionError(f'distill.stages_t has {len(ends["t"])} stages but distill.stages_g has '
                          f'{len(ends["g"])}: teacher and student need the same number of stages')
    return ends['t'], ends['g']


def build_adapters(distill_opt, net_t, net_g):
    """Teacher and student adapters from ``distill`` options (validated, checked against forward).

    Args:
        distill_opt (dict | None): The ``distill`` section, or its settings (``options_schema.settings``).
        net_t (nn.Module): Bare teacher.
        net_g (nn.Module): Bare student.

    Returns:
        tuple[StageAdapter, StageAdapter]
    """
    distill_opt = distill_opt or {}
    ends_t, ends_g = resolve_stage_ends(distill_opt, net_t, net_g)
    adapter_t = build_adapter(net_t, ends_t, distill_opt.get('adapter_t'), key='distill.stages_t')
    adapter_g = build_adapter(net_g, ends_g, distill_opt.get('adapter_g'), key='distill.stages_g')
    check_pairable(adapter_t, adapter_g)
    return adapter_t, adapter_g


def check_pairable(adapter_t, adapter_g):
    """Raise unless teacher and student features share their spatial size (what every feature term
    and mixer needs), checked on one small input."""
    size = max([16] + [2 * a.window_size for a in (adapter_t, adapter_g) if hasattr(a, 'window_size')])
    shapes = []
    for adapter in (adapter_t, adapter_g):
        param = next(adapter.net.parameters())
        x = torch.zeros(1, adapter.in_channels, size, size, device=param.device, dtype=param.dtype)
        with torch.no_grad():
            shapes.append(tuple(adapter.run_head(x)[0].shape[-2:]))
    if shapes[0] != shapes[1]:
        raise OptionError(f'Teacher {adapter_t.net.__class__.__name__} and student {adapter_g.net.__class__.__name__} '
                          f'cannot be paired for feature distillation: at a {size}x{size} input their body features '
                          f'are {shapes[0]} and {shapes[1]} (one of them changes the spatial size before its body, '
                          'e.g. RRDBNet at x1/x2 unshuffles its input). Pair networks whose bodies run at one size, '
                          'or use output KD only (KDModel without distill / feat_opt)')
