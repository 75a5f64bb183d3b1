"""Pins each reach of cdlm into Lightning's private API (cdlm/private_api.py): a Lightning
release that moves or changes one fails here, by name."""

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from cdlm.private_api import drop_hp_metric_placeholder, save_last_checkpoint_now


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(8, 1), batch_size=1)


def test_last_checkpoint_saved_at_the_current_step(tmp_path):
    """ModelCheckpoint saving every 100 steps has not saved at step 3; the reach writes last.ckpt
    at step 3, and a second call (same step) writes nothing."""
    callback = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=100)
    trainer = L.Trainer(max_steps=3, callbacks=[callback], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(Tiny())
    last = tmp_path / "last.ckpt"
    last.unlink(missing_ok=True)  # whatever fit's end wrote: the reach must write it again
    callback._last_global_step_saved = -1
    save_last_checkpoint_now(callback, trainer)
    assert torch.load(last, weights_only=False)["global_step"] == 3
    assert callback._last_global_step_saved == 3
    last.unlink()
    save_last_checkpoint_now(callback, trainer)  # already saved at this step
    assert not last.exists()


def test_hp_metric_placeholder_dropped(tmp_path):
    written = {}
    for drop in (False, True):
        logger = TensorBoardLogger(tmp_path, name=str(drop))
        if drop:
            drop_hp_metric_placeholder(logger)
        written[drop] = []
        logger.log_metrics = lambda metrics, step=None, drop=drop: written[drop].append(dict(metrics))
        logger.log_hyperparams({"lr": 0.1})
    assert written == {False: [{"hp_metric": -1}], True: []}
