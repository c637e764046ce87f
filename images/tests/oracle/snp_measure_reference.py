"""The SEV-SNP launch digest as the public reference computes it: PyPI `sev-snp-measure`
(virtee), run by images/tests/oracle.rs in the project's venv.

Usage: snp_measure_reference.py JOBS.json  ->  prints a JSON list, one hex digest per job.

A job is one of
  {"kind": "ovmf_hash", "ovmf": PATH}
  {"kind": "launch", "ovmf": PATH, "vcpus": N, "vcpu_type": NAME, "vmm": "QEMU"|"ec2"|"gce",
   "guest_features": INT, "kernel": PATH|null, "initrd": PATH|null, "append": STR|null}
  {"kind": "dstack", "inputs": PATH}   (dstack launch_inputs.json, rebuilt from the library's
                                        GCTX, SevHashes and VMSA pieces, as dstack does)
"""

import hashlib
import importlib.metadata
import json
import sys

from sevsnpmeasure import guest
from sevsnpmeasure.gctx import GCTX
from sevsnpmeasure.sev_hashes import SevHashes
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vcpu_types import CPU_SIGS
from sevsnpmeasure.vmm_types import VMMType
from sevsnpmeasure.vmsa import VMSA


def launch(job):
    return guest.snp_calc_launch_digest(
        job["vcpus"], CPU_SIGS[job["vcpu_type"]], job["ovmf"], job.get("kernel"),
        job.get("initrd"), job.get("append"), job["guest_features"], "",
        VMMType[job["vmm"]])


def dstack(job):
    with open(job["inputs"]) as f:
        m = json.loads(json.load(f)["sev_snp_measurement"])
    g = GCTX(seed=bytes.fromhex(m["ovmf_hash"]))
    hashes = SevHashes.__new__(SevHashes)
    hashes.kernel_hash = bytes.fromhex(m["kernel_hash"])
    hashes.initrd_hash = bytes.fromhex(m["initrd_hash"])
    hashes.cmdline_hash = hashlib.sha256(m["base_cmdline"].encode() + b"\0").digest()
    for s in m["ovmf_sections"]:
        t, gpa, size = s["section_type"], s["gpa"], s["size"]
        if t in (1, 4):
            g.update_zero_pages(gpa, size)
        elif t == 2:
            g.update_secrets_page(gpa)
        elif t == 3:
            g.update_cpuid_page(gpa)
        elif t == 0x10:
            g.update_normal_pages(gpa, hashes.construct_page(m["sev_hashes_table_gpa"] & 0xfff))
        else:
            raise ValueError(f"section type {t}")
    vmsa = VMSA(SevMode.SEV_SNP, m["sev_es_reset_eip"], CPU_SIGS[m["vcpu_type"]],
                m["guest_features"], VMMType.QEMU)
    for page in vmsa.pages(m["vcpus"]):
        g.update_vmsa_page(page)
    return g.ld()


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    out = {"version": importlib.metadata.version("sev-snp-measure"), "digests": []}
    for job in jobs:
        if job["kind"] == "ovmf_hash":
            ld = guest.calc_snp_ovmf_hash(job["ovmf"])
        elif job["kind"] == "launch":
            ld = launch(job)
        else:
            ld = dstack(job)
        out["digests"].append(ld.hex())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
