set -x
cd "$(dirname "$0")/../../.."  # the repository root
COMMON="DATA_PATH=data/sample TRAIN_GLOB=sotu_train_*.bin VAL_GLOB=sotu_val_*.bin TOKENIZER_PATH=data/sample/sotu_1024_bpe.model NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=2 NUM_KV_HEADS=1 XSA_LAST_N=1 TRAIN_SEQ_LEN=128 TRAIN_BATCH_TOKENS=4096 ITERATIONS=20 WARMDOWN_ITERS=8 MUON_MOMENTUM_WARMUP_STEPS=8 EMA_DECAY=0.5 MAX_WALLCLOCK_SECONDS=0 TRAIN_LOG_EVERY=5 WARMUP_STEPS=1 VAL_MAX_TOKENS=0"
env $COMMON DRY_RUN=1 python train_gpt.py; echo "dry rc=$?"
for SEED in 1337 42; do env $COMMON SEED=$SEED RUN_ID=sub_s$SEED python train_gpt.py > /dev/null; echo "seed $SEED rc=$?"; done
python records/records_tool.py new logs/sub_s1337.txt logs/sub_s42.txt --name "Tiny sample" --author "Jane Doe" --github-id janedoe --description Tiny_Sample --track non_record_16mb --blurb "tiny sample run" ; echo "new rc=$?"
D=$(ls -d records/track_non_record_16mb/*_Tiny_Sample)
python records/records_tool.py validate $D; echo "validate rc=$?"
ART=$(ls logs/sub_s1337.int*)
env $COMMON EVAL_ONLY=$ART RUN_ID=rescore python train_gpt.py | tail -3; echo "evalonly rc=$?"
grep final_score_exact logs/sub_s1337.txt
