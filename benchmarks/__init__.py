"""The measurements behind bench.py, one file each; bench.py runs them and prints the table.

    timing.py      interleaved warm-up + repeats, medians, rows, memory counting, the table
    common.py      ours and theirs from the same safetensors, one call signature, the training step
    train_step.py  1. training step vs transformers (sdpa, eager), the last layer at [CLS] only, the profile
    inference.py   2. inference throughput on length-sorted real reviews
    adapters.py    3. LoRA / QLoRA vs peft, and vs full fine-tuning (time, memory)
    tokenizing.py  4. the data pipeline: batched Rust vs transformers vs datasets.map, and the cache
    epoch.py       5. one epoch with length-bucketed vs random batches
    cuda.py        6. the GPU: bf16 steps, eager and CUDA graphs; inference; LoRA/QLoRA with bitsandbytes
    imdb_job.py    6. the whole IMDB job on a GPU: train.py (with and without CUDA graphs) vs a transformers loop
"""
