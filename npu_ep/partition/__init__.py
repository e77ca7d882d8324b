"""The partition pass: place GEMM nodes on the NPU or CPU with the cost model and rewrite the model
(`npu_ep.partition.planner`, `npu-ep partition`).

`npu_ep.partition` is also callable, `npu_ep.partition(model_path_or_proto, device="xdna1")`: the
package `npu_ep` makes it so, since the call prices nodes with this machine's calibration, which is
measured above this package.
"""
