"""Print val_loss / loss after each epoch: a ratio climbing above 1 means overfitting."""


class PrintValTrainRatio:
    def __init__(self, precision=2):
        self.precision = precision

    def on_epoch_end(self, epoch, logs):
        ratio = logs["val_loss"] / logs["loss"]
        print(f"Epoch={epoch}, Val/Train={ratio:.{self.precision}f}")
