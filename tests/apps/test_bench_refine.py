"""The refinement benchmark (fenchel_idl.apps.bench_refine) against its numpy re-derivation."""


def test_refine_equals_a_plain_numpy_loop_and_benchmarks_run():
    """The benchmark's inline numpy re-derivation (same fixed points, same Adam, same
    projection) ends at the same parameters as refine(): an independent reference."""
    from fenchel_idl.apps.bench_refine import (
        bench_projection,
        bench_refine_epoch,
        cosine_experiment,
    )

    out = bench_refine_epoch(repeats=1, epochs=2)
    assert out["max_param_difference"] < 1e-10
    assert out["ratio"] > 0
    proj = bench_projection(n=20, repeats=2)
    assert proj["max_difference"] < 1e-12 and proj["ratio"] > 0
    exp = cosine_experiment(epochs=2)
    assert exp["epochs"] == 2 and exp["norm_A"] <= 0.5
    assert exp["train_rmse"] < exp["initial_train_rmse"]
