import torch
from safetensors.torch import load_file
from nlp_transfer import train
def test_a(tmp_path, make_cfg, tiny_bert_dir):
    for ep in (2,3):
        cfg = make_cfg(tmp_path/str(ep), "model.pooling=auto", "transfer.mode=gradual", f"train.epochs={ep}", "train.metric_for_best=loss", "train.weight_decay=0.1")
        r = train(cfg, progress=False)
        pre = load_file(str(tiny_bert_dir / "model.safetensors"))
        after = load_file(str(r.output_dir / "model.safetensors"))
        print(ep, r.best_epoch, [h["validation"]["f1_macro"] for h in r.history], sorted({k.rsplit('.',3)[0] for k in pre if not torch.equal(pre[k], after[k])}))
