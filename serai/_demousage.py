"""What ``serai demo --keep-running`` prints: where everything runs and how to call it."""

from __future__ import annotations

from adapters.agencies.scenario import BUYER, CLEAN_PARCEL, CLEAN_SELLER, DEBTOR_SELLER
from serai._demofederation import NOTARY, Federation

__all__ = ["print_usage"]


def print_usage(federation: Federation, adapters: dict[str, str]) -> None:
    """Print the running federation's addresses and example calls."""
    minjust = federation.gateways["minjust"]
    print("\nThe federation keeps running; Ctrl-C stops it.\n")
    print(f"  work directory   {federation.workdir}")
    print(f"  registry         gRPC {federation.registry_grpc}, "
          f"configuration http://{federation.registry_http}/")  # fmt: skip
    for key, gw in federation.gateways.items():
        print(f"  {gw.agency.gateway_id:<24} IS {gw.is_port}, peer {gw.peer}, admin {gw.admin}")
        print(f"  {'':<24} adapter {gw.agency.adapter} on {adapters[key]}")
    print("  process logs     logs/*.log (JSON event lines)")
    print(
        "\nCall it with grpcurl (not installed here; https://github.com/fullstorydev/grpcurl),"
        "\ngiving the two x-road headers. The IS port answers gRPC reflection from the"
        "\ndescriptors the registry published, so no .proto file is needed:\n"
    )
    print(
        "  grpcurl -plaintext -H 'x-road-client: UZ/GOV/MINJUST/property' "
        f"-H 'x-road-service: UZ/GOV/STC/tax' \\\n    {minjust.is_port} list tax.v1.Tax\n"
    )
    print(
        "  grpcurl -plaintext \\\n"
        f"    -H 'x-road-client: UZ/GOV/MINJUST/property' -H 'x-road-service: UZ/GOV/STC/tax' \\\n"
        f'    -d \'{{"taxpayer_id": "{DEBTOR_SELLER}"}}\' \\\n'
        f"    {minjust.is_port} tax.v1.Tax/GetTaxDebt\n"
    )
    print(
        "  grpcurl -plaintext \\\n"
        f"    -H 'x-road-client: {NOTARY}' -H 'x-road-service: UZ/GOV/MINJUST/property' \\\n"
        f'    -d \'{{"request_id": "notary-0142-2026-0001", "cadastral_number": '
        f'"{CLEAN_PARCEL}",\n'
        f'         "seller_id": "{CLEAN_SELLER}", "buyer_id": "{BUYER}",\n'
        f'         "price": {{"amount_minor": 85000000001, "currency": "UZS"}}}}\' \\\n'
        f"    {minjust.is_port} property.v1.PropertyRegistration/RegisterTransfer\n"
    )
    print("  (the same request_id returns transfer 1's decision again: it is idempotent)\n")
    config = f"{minjust.folder}/gateway.toml"
    print("Read the evidence and manage access rights:\n")
    print(f"  serai log show --config {config}")
    print(f"  serai log verify --config {config}")
    print(f"  serai log export --config {config} --out evidence.zip")
    print(
        f"  serai acl list --gateway {federation.gateways['stc'].admin} "
        f"--token-file {federation.gateways['stc'].admin_token}"
    )
    named = [(gw.agency.gateway_id, gw.metrics) for gw in federation.gateways.values()]
    named.append(("registry", federation.registry_metrics))
    targets = [t for _, t in named if t]
    if targets:
        print("\nMetrics (Prometheus), with /healthz and /readyz beside them:\n")
        for name, target in named:
            if target:
                print(f"  {name:<24} http://{target}/metrics")
        quoted = ", ".join(f'"{t}"' for t in targets)
        print(
            "\n  as Prometheus targets (deploy/prometheus/targets/demo.json; docs/operations.md):"
            f'\n  [{{"targets": [{quoted}]}}]',
            flush=True,
        )
    else:
        print("\nMetrics: this build's gateways serve no /metrics.", flush=True)
