"""The partition pass: place GEMM nodes on the NPU or CPU with the cost model and rewrite the model
(`npu_ep.partition.planner.partition`, `npu-ep partition`)."""
