"""latent.metrics.coverage on known cases: NDB/K near alpha, Vendi 1 for copies, PRDC on
constructed sets, authenticity and C_T for copies of training data, chunked k-NN vs brute force."""

import numpy as np
import pytest

from latent.metrics import coverage as c


def brute_knn(q, r, k):
    d = np.sqrt(((q[:, None] - r[None]) ** 2).sum(-1))
    return np.sort(d, 1)[:, :k]


def test_knn_matches_brute_force_in_chunks():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(50, 6)), rng.normal(size=(70, 6))
    np.testing.assert_allclose(c.knn_distances(q, r, 3, chunk=7), brute_knn(q, r, 3), atol=1e-4)
    self_d = c.knn_distances(r, r, 2, exclude_self=True, chunk=9)
    np.testing.assert_allclose(self_d, brute_knn(r, r, 3)[:, 1:], atol=1e-4)


def test_ndb_k_is_near_alpha_for_one_distribution_and_high_for_a_collapse():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 4)) * 4
    draw = lambda n: centres[rng.integers(0, 8, n)] + rng.normal(size=(n, 4))
    real = draw(6000)
    vals = [c.ndb_k(real, draw(1000), k=20, seed=s)["ndb_k"] for s in range(4)]
    assert np.mean(vals) <= 0.15
    collapsed = centres[0] + rng.normal(size=(1000, 4))
    assert c.ndb_k(real, collapsed, k=20)["ndb_k"] > 0.5


def test_vendi_score_of_copies_is_one_and_of_orthogonal_items_is_n():
    one = np.tile(np.random.default_rng(2).normal(size=(1, 16)), (50, 1))
    assert c.vendi_score(one) == pytest.approx(1.0, abs=1e-6)
    assert c.vendi_score(np.eye(10)) == pytest.approx(10.0, rel=1e-6)


def test_prdc_on_constructed_cases():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(1500, 3))
    same = c.prdc(real, rng.normal(size=(1500, 3)), k=5)
    assert same["precision"] > 0.7 and same["recall"] > 0.7
    assert 0.8 < same["density"] < 1.2 and same["coverage"] > 0.9
    far = c.prdc(real, rng.normal(size=(500, 3)) + 20, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # collapse onto one small region: high precision, low recall and coverage
    tight = c.prdc(real, rng.normal(size=(500, 3)) * 0.05, k=5)
    assert tight["precision"] > 0.9 and tight["recall"] < 0.1 and tight["coverage"] < 0.1


def test_authenticity_and_ct_flag_copies_of_training_data():
    rng = np.random.default_rng(4)
    train, test, fresh = (rng.normal(size=(n, 5)) for n in (3000, 600, 600))
    copies = train[rng.choice(3000, 600, replace=False)] + 1e-4 * rng.normal(size=(600, 5))
    assert c.authenticity(train, copies) < 0.02
    assert 0.3 < c.authenticity(train, fresh) < 0.7
    ct_copy = c.ct_statistic(train, test, copies, cells=5)
    ct_fresh = c.ct_statistic(train, test, fresh, cells=5)
    assert ct_copy["ct"] < -10 and abs(ct_fresh["ct"]) < 3
    assert c.mean_nn_distance(copies, train) < 1e-3
    assert c.mean_nn_distance(fresh, train) > 0.3
