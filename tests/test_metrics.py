"""MetricsManager against hand computation: phases, loaders, names, flattening, checks, two ranks."""

from __future__ import annotations

import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchmetrics

from okc.config.schema import Metric, Phase
from okc.errors import OkcError, under
from okc.metrics import MetricsManager, check_metrics
from okc.registry import METRICS

ACC = {"task": "multiclass", "num_classes": 3}
MAP = {"preds": "prediction", "target": "target"}


@METRICS.register(name="okc_test_SumAndParts")
class SumAndParts(torchmetrics.Metric):
    """A metric whose result is a dict holding a scalar and a vector."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total += values.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        return {"sum": self.total, "parts": torch.stack([self.total, 2 * self.total])}


def batch(preds: list[int], target: list[int]) -> dict[str, torch.Tensor]:
    return {"prediction": torch.tensor(preds), "target": torch.tensor(target)}


def values(results: dict) -> dict[str, float]:
    return {k: float(v) for k, v in results.items()}


def test_accuracy_over_batches_and_phases_by_hand():
    manager = MetricsManager(
        [
            Metric(name="Accuracy", mapping=MAP, params=ACC),
            Metric(name="MeanSquaredError", mapping=MAP, phases=(Phase.VALID,), tag="mse"),
        ]
    )
    manager.update(Phase.TRAIN, batch([0, 1, 2, 2], [0, 1, 1, 2]))  # 3 of 4 right
    manager.update(Phase.TRAIN, batch([1, 1], [0, 0]))  # 0 of 2
    assert values(manager.on_epoch_end(Phase.TRAIN)) == pytest.approx({"train/Accuracy": 3 / 6})
    manager.update(Phase.VALID, batch([0, 2], [0, 1]))
    manager.update(Phase.VALID, batch([2], [2]))
    got = values(manager.on_epoch_end(Phase.VALID))
    assert got == pytest.approx({"valid/Accuracy": 2 / 3, "valid/mse": (0 + 1 + 0) / 3})
    # reset: a new epoch starts from nothing
    manager.update(Phase.TRAIN, batch([2], [2]))
    assert values(manager.on_epoch_end(Phase.TRAIN)) == {"train/Accuracy": 1.0}
    assert manager.log_names(Phase.VALID) == ["valid/Accuracy", "valid/mse"]


def test_several_loaders_get_their_own_metric_and_name():
    manager = MetricsManager(
        [
            Metric(name="Accuracy", mapping=MAP, params=ACC, val_dataloader_idxs=(0, 1)),
            Metric(name="Accuracy", mapping=MAP, params=ACC, tag="acc", test_dataloader_idxs=(1,)),
        ]
    )
    manager.update(Phase.VALID, batch([0, 1], [0, 0]), dataloader_idx=0)
    manager.update(Phase.VALID, batch([1, 1], [1, 1]), dataloader_idx=1)
    assert values(manager.on_epoch_end(Phase.VALID)) == pytest.approx(
        {"valid/Accuracy_dataloader_0": 0.5, "valid/Accuracy_dataloader_1": 1.0, "valid/acc": 0.5}
    )
    manager.update(Phase.TEST, batch([0], [1]), dataloader_idx=0)  # acc only watches loader 1
    manager.update(Phase.TEST, batch([2], [2]), dataloader_idx=1)
    assert values(manager.on_epoch_end(Phase.TEST)) == {"test/Accuracy": 0.0, "test/acc": 1.0}


def test_duplicate_log_names_and_bad_indices_are_config_errors():
    errors = check_metrics(
        [
            Metric(name="Accuracy", mapping=MAP, params=ACC),
            Metric(name="Accuracy", mapping=MAP, params={**ACC, "average": "macro"}),
            Metric(name="Accuracy", mapping=MAP, params=ACC, tag="a", val_dataloader_idxs=(1, 1)),
        ]
    )
    by_path = {e.path: e.message for e in under("metrics", errors)}
    assert (
        "'Accuracy' is already logged by metrics.0 (in TRAIN, VALID, TEST, PREDICT)"
        in by_path["metrics.1.tag"]
    )
    assert "distinct" in by_path["metrics.2.val_dataloader_idxs"]


def test_dict_and_vector_results_are_flattened():
    manager = MetricsManager(
        [
            Metric(name="okc_test_SumAndParts", mapping={"values": "prediction"}, tag="s"),
            Metric(
                name="MulticlassAccuracy", mapping=MAP, params={"num_classes": 3, "average": None}
            ),
        ]
    )
    manager.update(Phase.VALID, batch([0, 1, 1, 2], [0, 1, 2, 0]))
    assert values(manager.on_epoch_end(Phase.VALID)) == pytest.approx(
        {
            "valid/s_sum": 4.0,
            "valid/s_parts_0": 4.0,
            "valid/s_parts_1": 8.0,
            "valid/MulticlassAccuracy_0": 0.5,  # class 0: 1 of 2
            "valid/MulticlassAccuracy_1": 1.0,
            "valid/MulticlassAccuracy_2": 0.0,
        }
    )


def test_matrices_are_skipped_with_one_warning():
    manager = MetricsManager(
        [
            Metric(name="ConfusionMatrix", mapping=MAP, params=ACC),
            Metric(name="Accuracy", mapping=MAP, params=ACC),
        ]
    )
    caught_per_epoch = []
    for _ in range(2):
        manager.update(Phase.TEST, batch([0], [0]))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert values(manager.on_epoch_end(Phase.TEST)) == {"test/Accuracy": 1.0}
        caught_per_epoch.append([str(w.message) for w in caught])
    (message,) = caught_per_epoch[0]
    assert "test/ConfusionMatrix (a (3, 3) tensor) is not a scalar" in message
    assert caught_per_epoch[1] == []
    assert manager.unlogged["test/ConfusionMatrix"].tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_metrics_never_updated_return_nothing_and_do_not_warn():
    manager = MetricsManager([Metric(name="Accuracy", mapping=MAP, params=ACC)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert manager.on_epoch_end(Phase.VALID) == {}
        assert manager.on_epoch_end(Phase.PREDICT) == {}


def test_missing_output_key_names_the_config_path_and_the_outputs():
    manager = MetricsManager(
        [Metric(name="Accuracy", mapping=MAP, params=ACC, phases=(Phase.VALID,))]
    )
    manager.update(Phase.TRAIN, {"logits": torch.zeros(1)})  # no metric in TRAIN: nothing read
    with pytest.raises(OkcError) as err:
        manager.update(Phase.VALID, {"logits": torch.zeros(1), "target": torch.zeros(1)})
    assert "metrics.0.mapping.preds" in str(err.value) and "it produces: logits, target" in str(
        err.value
    )
    manager.check_outputs(Phase.VALID, {"prediction", "target"})


@pytest.mark.parametrize(
    ("preds", "target", "expected"),
    [
        (torch.randn(4, 3), torch.tensor([0, 2, 1, 2]), "MulticlassAccuracy"),
        (torch.randn(4, 3), torch.randint(0, 2, (4, 3)), "MultilabelAccuracy"),
        (torch.randn(4), torch.tensor([0, 1, 1, 0]), "BinaryAccuracy"),
    ],
)
def test_accuracy_without_task_or_size_reads_them_from_the_first_batch_shapes(
    preds, target, expected
):
    """torchmetrics 0.x inferred task and size from the data; okc reads shapes, never values."""
    spec = Metric(name="Accuracy", mapping=MAP)
    assert check_metrics([spec]) == []
    manager = MetricsManager([spec])
    manager.update(Phase.VALID, {"prediction": preds, "target": target})
    (metric,) = manager.phase_metrics["VALID"]
    assert type(metric.metric).__name__ == expected
    task = expected.removesuffix("Accuracy").lower()
    size = {"multiclass": {"num_classes": 3}, "multilabel": {"num_labels": 3}}.get(task, {})
    reference = torchmetrics.Accuracy(task=task, **size)
    reference.update(preds, target)
    value = manager.on_epoch_end(Phase.VALID)["valid/Accuracy"]
    assert value.item() == pytest.approx(reference.compute().item())


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"num_classes": 3}, torchmetrics.classification.MulticlassJaccardIndex),
        ({"num_labels": 3}, torchmetrics.classification.MultilabelJaccardIndex),
        ({"num_labels": 3, "num_classes": 3}, torchmetrics.classification.MultilabelJaccardIndex),
        ({"task": "binary"}, torchmetrics.classification.BinaryJaccardIndex),
    ],
)
def test_task_left_out_by_torchmetrics_0x_configs_follows_the_size_parameter(params, expected):
    """TorchOk's configs name JaccardIndex/Accuracy/F1Score without the ``task`` 1.x requires."""
    for name in ("JaccardIndex", "F1Score", "Accuracy"):
        spec = Metric(name=name, mapping=MAP, params=params)
        assert check_metrics([spec]) == []
        (metric,) = MetricsManager([spec]).phase_metrics["VALID"]
        assert type(metric).__name__ == expected.__name__.replace("JaccardIndex", name)
    spec = Metric(name="JaccardIndex", mapping=MAP, params={"num_classes": 3, "ignore_index": 0})
    manager = MetricsManager([spec])
    manager.update(Phase.VALID, batch([0, 1, 2, 2], [0, 1, 1, 2]))
    # class 0 is ignored: IoU(1) = 1/2, IoU(2) = 1/2
    assert manager.on_epoch_end(Phase.VALID)["valid/JaccardIndex"].item() == pytest.approx(0.5)


def test_check_reports_names_params_and_mapping_arguments():
    errors = check_metrics(
        [
            Metric(name="Acuracy", mapping=MAP),
            Metric(
                name="MulticlassAccuracy",
                mapping={"pred": "x", "target": "y"},
                params={"num_classes": 3},
            ),
            Metric(name="Accuracy", mapping=MAP, params={"task": "multiclass", "num_clases": 3}),
        ]
    )
    by_path = {e.path: e.message for e in under("metrics", errors)}
    assert "did you mean 'Accuracy'" in by_path["metrics.0.name"]
    assert "did you mean 'preds'" in by_path["metrics.1.mapping.pred"]
    assert "did you mean 'num_classes'" in by_path["metrics.2.params.num_clases"]


def test_update_detaches_outputs_so_list_states_hold_no_graph():
    manager = MetricsManager(
        [Metric(name="BinaryAUROC", mapping={"preds": "prediction", "target": "target"})]
    )
    logits = torch.randn(4, requires_grad=True)
    manager.update(
        Phase.TRAIN, {"prediction": logits.sigmoid(), "target": torch.tensor([0, 1, 1, 0])}
    )
    (metric,) = manager.phase_metrics["TRAIN"]
    assert all(not p.requires_grad for p in metric.preds)


# --- two ranks (gloo) -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        manager = MetricsManager(
            [
                Metric(name="Accuracy", mapping=MAP, params=ACC),
                Metric(
                    name="Accuracy", mapping=MAP, params=ACC, tag="late", val_dataloader_idxs=(1,)
                ),
            ]
        )
        # Accuracy: 2 of 2 right on rank 0, 0 of 2 on rank 1. Only rank 0 gets a batch of loader 1,
        # so 'late' was updated on one rank: both must still compute it together.
        if rank == 0:
            manager.update(Phase.VALID, batch([1, 2], [1, 2]))
            manager.update(Phase.VALID, batch([1], [0]), dataloader_idx=1)
        else:
            manager.update(Phase.VALID, batch([0, 0], [1, 2]))
        queue.put((rank, values(manager.on_epoch_end(Phase.VALID))))
        queue.put((rank, values(manager.on_epoch_end(Phase.VALID))))  # nothing updated anywhere
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_ranks_agree_and_sync_through_torchmetrics():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = mp.start_processes(
        _rank_main, args=(_free_port(), queue), nprocs=2, join=False, start_method="spawn"
    )
    results: dict[int, list[dict[str, float]]] = {0: [], 1: []}
    try:
        for _ in range(4):  # a rank stuck in a sync the other skipped times out here
            rank, got = queue.get(timeout=60)
            results[rank].append(got)
        while not procs.join(timeout=60):
            pass
    finally:
        for proc in procs.processes:
            if proc.is_alive():
                proc.terminate()
    expected = {"valid/Accuracy": 2 / 4, "valid/late": 0.0}
    for rank in (0, 1):
        assert results[rank][0] == pytest.approx(expected)
        assert results[rank][1] == {}
