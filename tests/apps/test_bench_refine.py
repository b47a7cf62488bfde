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


def test_float32_epoch_matches_the_float32_numpy_loop_and_mnist_section_prints():
    from fenchel_idl.apps.bench_refine import bench_refine_epoch, mnist_section

    out = bench_refine_epoch(repeats=1, epochs=2, dtype="float32")
    # the same float32 arithmetic in both loops: equal up to float32 rounding
    assert out["max_param_difference"] < 1e-4 and out["ratio"] > 0
    assert out["dtype"] == "float32"
    fake = {d: {**out, "dtype": d} for d in ("float64", "float32")}
    text = mnist_section({**fake, "speedup": 1.0})
    assert "| float32 |" in text and f"{out['ratio']:.2f}" in text
