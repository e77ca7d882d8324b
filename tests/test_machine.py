"""The CPU facts: /proc/cpuinfo parsed, checked against the CPU's own CPUID answer (numpy's probe)."""
from __future__ import annotations

from npu_ep.machine import CPUINFO, cpu, read_cpu

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2

processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx avx2
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu avx avx2 avx512f avx512bw avx512_vnni avx_vnni amx_tile amx_int8 amx_bf16
"""
ALDER_LAKE = "model name\t: 12th Gen Intel(R) Core(TM) i7-1260P\nflags\t\t: avx avx2 avx_vnni\n"
NO_AVX512 = {"avx2": True, "avx512f": False, "avx512_vnni": False}
ALL = {"avx2": True, "avx512f": True, "avx512_vnni": True}


def test_avx2_only_cpu_has_no_exact_int8():
    here = read_cpu(EPYC_AVX2, NO_AVX512)
    assert here.model == "AMD EPYC 7B12"
    assert here.feature_names() == ["AVX2"] and not here.exact_int8
    assert here.describe() == "AMD EPYC 7B12 (AVX2)"
    assert here.source == str(CPUINFO)


def test_vnni_and_amx_are_read_and_make_int8_exact():
    here = read_cpu(SAPPHIRE_RAPIDS, ALL)
    assert here.feature_names() == ["AVX2", "AVX-512F", "AVX512-VNNI", "AVX-VNNI", "AMX-INT8"]
    assert here.exact_int8
    alder = read_cpu(ALDER_LAKE, NO_AVX512)  # AVX-VNNI without AVX-512: MLAS's AVX-VNNI kernel is exact
    assert alder.feature_names() == ["AVX2", "AVX-VNNI"] and alder.exact_int8


def test_an_emulator_showing_the_hosts_cpuinfo_is_believed_by_cpuid():
    # qemu-user passes the host's /proc/cpuinfo through while emulating a CPU without AVX-512.
    here = read_cpu(SAPPHIRE_RAPIDS, NO_AVX512)
    assert here.feature_names() == ["AVX2"] and not here.exact_int8
    assert here.source.startswith("CPUID") and "disagrees" in here.source


def test_without_cpuinfo_the_cpuid_probe_answers():
    here = read_cpu("", ALL)
    assert here.feature_names() == ["AVX2", "AVX-512F", "AVX512-VNNI"] and here.source == "CPUID (numpy)"
    assert here.model  # platform's processor name, or at least the architecture


def test_this_machine_agrees_with_its_own_cpuid():
    from npu_ep.machine import _numpy_features

    here = cpu()
    probed = _numpy_features()
    for flag, present in probed.items():
        assert (flag in here.features) == present, flag
    assert here.as_dict()["exact_int8"] == here.exact_int8
