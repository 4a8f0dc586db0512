"""``cyconv convert fc2conv IN.onnx OUT.onnx``: FC-to-conv rewrite for dense sliding windows."""
from __future__ import annotations

import onnx


def add_parser(commands):
    convert = commands.add_parser("convert", help="model rewrites (fc2conv: FC layers -> conv)")
    convert.add_argument("rewrite", choices=["fc2conv"],
                         help="fc2conv: fully-connected head -> convolutions, dynamic H/W")
    convert.add_argument("model", help="input .onnx")
    convert.add_argument("output", help="where to write the converted .onnx")
    convert.add_argument("--input-shape", default=None, metavar="CxHxW",
                         help="native crop size, when the model's H/W are symbolic")
    convert.set_defaults(handler=command_convert)


def command_convert(args) -> int:
    from ..converters import fc_to_conv, receptive_field

    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(d) for d in args.input_shape.lower().split("x"))
        except ValueError:
            raise ValueError(f"bad --input-shape {args.input_shape!r}: expected e.g. "
                             "3x224x224") from None
    converted = fc_to_conv(args.model, input_shape=shape)
    onnx.save(converted, args.output)
    rf = receptive_field(converted)
    ops = sorted({n.op_type for n in converted.graph.node})
    print(f"wrote {args.output}: {len(converted.graph.node)} nodes ({', '.join(ops)})")
    print(f"native crop {rf.native[0]}x{rf.native[1]}, window {rf.size[0]}x{rf.size[1]}, "
          f"stride {rf.stride[0]}x{rf.stride[1]}, offset {rf.offset}: an HxW image gives "
          f"((H-{rf.native[0]})//{rf.stride[0]}+1) x ((W-{rf.native[1]})//{rf.stride[1]}+1) "
          "windows")
    if rf.exact:
        print("dense map == explicit crops (no padding or ceil-mode overhang in the window)")
    else:
        print("dense map approximates the crops near their borders:")
        for reason in rf.reasons:
            print(f"  {reason}")
    return 0
