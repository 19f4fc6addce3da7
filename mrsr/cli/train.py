"""``mrsr train`` and ``mrsr models``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrsr.errors import one_line
from mrsr.progress import note


def cmd_train(args: argparse.Namespace) -> None:
    from mrsr.training import load_config, train

    path = train(load_config(args.config, args.set or ()), resume=args.resume)
    note(one_line(f"checkpoint: {path}"))


def cmd_models(args: argparse.Namespace) -> None:
    from mrsr import networks
    from mrsr.checkpoint import load_checkpoint
    from mrsr.zoo import shipped_weights

    print("networks:", ", ".join(networks.available()))
    shipped = shipped_weights()
    print("shipped weights:" + ("" if shipped else " none yet"))
    for name, path in sorted(shipped.items()):
        spec, _ = load_checkpoint(path)
        headline = spec.info.get("headline", "")
        print(f"  {name}: {spec.network} x{spec.scale} {spec.degradation} {headline}")


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network from a config (pipelines/*.yaml or your own)",
        description="Train from a YAML config; keys are documented in pipelines/README.md. "
        "Under torchrun the run is distributed (DDP; gloo on CPU, nccl on GPU).",
        epilog="""examples:
  mrsr train pipelines/cpu_small_kspace_x2.yaml
  mrsr train my.yaml --set train.max_steps=5000 --set data.train=/data/ixi/t2
  mrsr train my.yaml --resume
  mrsr train pipelines/default_models/cssfn_kspace_x2.yaml --set train.init=cssfn-kspace-x2 \\
      --set data.train=/data/mine --set data.val=/data/mine_heldout   # fine-tune a default model
  torchrun --nproc_per_node=4 -m mrsr train pipelines/ixi_td_x2.yaml --set train.device=cuda""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", type=Path, help="YAML config")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    p.set_defaults(func=cmd_train)


def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the networks and the weights available")
    p.set_defaults(func=cmd_models)
