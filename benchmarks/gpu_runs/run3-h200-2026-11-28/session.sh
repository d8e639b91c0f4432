#!/bin/bash
# One device call (timeout_s 595): gpu_check in three parts, with the PNIL protocol rerun
# (issue 10, --patience 5, SPSA 100 x 2048 on every seed) in the background during the
# parts that time nothing, stopped (SIGSTOP) while the timed part runs.
set -u
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
T0=$(date +%s)
END=$((T0 + ${1:-570}))   # everything, the tar included, is done by then
left() { echo $((END - $(date +%s))); }
GC=/tmp/gc
mkdir -p $GC /tmp/data/FashionMNIST/raw
for f in .gpu/FashionMNIST/raw/*.gz; do
  gunzip -c "$f" >/tmp/data/FashionMNIST/raw/"$(basename "$f" .gz)"
done
echo "[session] data ready at +$(($(date +%s) - T0)) s"

python3 benchmarks/gpu_check.py --only extension --budget 150 --out $GC/a.json

{
  echo "== toolchain"; g++ --version | head -1; c++ --version | head -1
  python3 -c "import torch; print(torch.__version__, torch.compiled_with_cxx11_abi(), torch._C._GLIBCXX_USE_CXX11_ABI)"
  so=$(find ~/.cache/fastnoise . -name 'fastnoise_C*.so' 2>/dev/null | head -1)
  echo "== $so"; ldd "$so"
  echo "== nm -DC _M_insert<long>"; nm -DC "$so" | grep '_M_insert<long>'
  echo "== nm -C (all) _M_insert / codecvt"; nm -C "$so" | grep -E '_M_insert<long>|codecvt<char16_t' | head
  echo "== build flags"; find ~/.cache/fastnoise -name build.ninja 2>/dev/null | head -1 | xargs grep -E '^(cflags|ldflags|cuda_cflags)' 2>/dev/null
} >$GC/diag.txt 2>&1

PROTO=(python3 benchmarks/reproduce_pnil_table1.py --data-root /tmp/data --datasets fashion-mnist
  --epochs 30 --patience 5 --train-limit 20000 --holdout 1000 --protocol pnil --pgd-samples 1000
  --spsa-samples 100 --seeds 0 1 2 --full-spsa-seeds 0 1 2 --device cuda --no-compile
  --out /tmp/p5 --results /tmp/p5/results.md)
setsid "${PROTO[@]}" >>$GC/protocol.log 2>&1 &
P=$!
echo $P >/tmp/p5.pid
echo "[session] protocol started (pid $P) at +$(($(date +%s) - T0)) s"

python3 benchmarks/gpu_check.py --only tests,graph --budget 230 --out $GC/b.json

kill -STOP -- -$P 2>/dev/null
echo "[session] protocol stopped at +$(($(date +%s) - T0)) s for the timed steps"
python3 benchmarks/gpu_check.py --only overhead,eot,bandwidth,l2p --budget $(($(left) - 25)) \
  --out $GC/c.json
kill -CONT -- -$P 2>/dev/null
while kill -0 $P 2>/dev/null && [ "$(left)" -gt 12 ]; do sleep 2; done
kill -STOP -- -$P 2>/dev/null  # stays stopped on a warm machine; .gpu/resume.sh goes on
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv >>$GC/diag.txt 2>&1
cp /tmp/p5/rows.jsonl /tmp/p5/results.md $GC/ 2>/dev/null
tar czf "$OUT/gc.tgz" -C /tmp gc
cp $GC/c.md $GC/b.md "$OUT/" 2>/dev/null
echo "[session] done at +$(($(date +%s) - T0)) s"
