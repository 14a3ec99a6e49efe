"""The solver registry: one class per ``solver=`` name, dispatch by name, clear errors."""
import numpy as np
import pytest

import lsi
from core_data import digits_subset
from lsi import solvers
from lsi.enums import Solver


def test_every_solver_name_has_one_class_declaring_it():
    assert list(solvers.SOLVERS) == [cls._key for cls in solvers.SOLVERS.values()]
    assert set(solvers.SOLVERS) == {member.value for member in Solver}
    for member in Solver:
        assert solvers.solver_class(member) is solvers.solver_class(member.value)
    assert {key for key, cls in solvers.SOLVERS.items() if cls.first_order} == {"gd", "warm-start"}


def test_unknown_solver_is_refused_with_the_valid_names():
    for call in (lambda: solvers.solver_class("newton"),
                 lambda: lsi.compute_lsi(*digits_subset(20, classes=3), solver="newton", progress=False)):
        with pytest.raises(ValueError, match="solver='newton' is not valid; choose one of 'gd', 'converged', "
                                             "'newton-step', 'warm-start'"):
            call()


def test_converged_table_reports_each_solves_steps_and_certificate():
    X, y = digits_subset(60, classes=3)
    table = lsi.compute_lsi(X, y, solver="converged", progress=False)
    assert table["grad_norm"].max() <= 1e-10
    assert np.issubdtype(table["steps"].dtype, np.integer) and table["steps"].min() >= 1
    assert "steps" not in lsi.compute_lsi(X, y, solver="newton-step", progress=False)
