"""Selection under a parameter or multiply-add budget, solved exactly, and its Pareto front.

Selection without a budget keeps, edge by edge, the op with the largest
value (a mean coefficient, or a perturbation score); that maximises the
sum of the kept values. Under a budget the same sum is maximised subject
to the evaluation network's size (`evaluation/cost_table.py`: a fixed part
plus one measured cost per kept (cell, edge, op)) staying within
`max_params` and `max_multiply_adds`. That is a multiple-choice knapsack
with two weights, solved as a 0/1 integer program by HiGHS
(`scipy.optimize.milp`, relative gap 0): the optimum, not a search by trial
and error. Variables: x[cell, edge, op] in {0, 1};

- argmax rule: every edge keeps exactly one op (`zero` costs nothing);
- top2 rule: every edge keeps at most one non-zero op and every
  intermediate node exactly two incoming edges;
- `max_parameter_free` (a remedy): per cell at most that many kept edges
  with a parameter-free op other than `zero`; `exclude_zero` and ops
  without a value (perturbation's unscored ops) are fixed at 0.

With no budget the optimum is the unbudgeted rule's pick (up to ties).
"""

import dataclasses

import numpy as np
from scipy import optimize, sparse

from asmnas_tf.errors import UserError
# The builder's configurable is registered with the search's: a search's gin binds build_eval_net.channels.
from asmnas_tf.evaluation import builder  # noqa: F401
from asmnas_tf.evaluation.cost_table import MACS, PARAMS, measure_costs

_OPTIONS = {"mip_rel_gap": 0.0, "presolve": True}


@dataclasses.dataclass(frozen=True)
class Budget:
    """The largest evaluation network a search may pick; None: no limit on that measure."""

    max_params: int | None = None
    max_multiply_adds: int | None = None

    def check(self, binding="run_search"):
        for name in ("max_params", "max_multiply_adds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{binding}.{name}={value!r} is not an int >= 1 or None")
        return self

    @property
    def active(self):
        return self.max_params is not None or self.max_multiply_adds is not None

    def describe(self):
        parts = []
        if self.max_params is not None:
            parts.append(f"{self.max_params:,} parameters")
        if self.max_multiply_adds is not None:
            parts.append(f"{self.max_multiply_adds / 1e6:.2f} M multiply-adds")
        return " and ".join(parts)


@dataclasses.dataclass(frozen=True)
class Problem:
    """What selection chooses among: values [L, E, O], the cost table, the rule and the remedies' limits."""

    values: np.ndarray
    table: object
    rule: str = "argmax"
    allowed: tuple = ()
    max_parameter_free: int | None = None

    @property
    def shape(self):
        return self.values.shape

    def choice_bounds(self):
        """1 where x[cell, edge, op] may be chosen, else 0 (flattened)."""
        space = self.table.space
        ok = np.isfinite(self.values)
        if self.allowed:
            ok &= np.asarray(self.allowed, bool)[None, None, :]
        if self.rule == "top2" and space.has_zero:
            ok[:, :, space.index("zero")] = False
        return ok.reshape(-1).astype(np.float64)


class _Program:
    """The integer program of a Problem: the choices x and the variables that say what is alive.

    Besides x [L, E, O]: w [L, E, O] (x's cost counts: x and its cell
    alive), u [L, 2] (the cell uses input s), z [L, N] (node n has no kept
    non-zero edge), v [L, 2] (u and the cell alive), a [L] (the cell is
    alive; the last one is). Every auxiliary is bounded below by what forces
    it (`evaluation/cost_table.py` says when each holds) and only raises a
    cost, so a choice fits a budget exactly when its network does.
    """

    def __init__(self, problem):
        self.problem = problem
        cells, edges, ops = problem.shape
        space = problem.table.space
        self.zero = space.index("zero") if space.has_zero else -1
        sizes = {"x": cells * edges * ops, "w": cells * edges * ops, "u": cells * 2,
                 "z": cells * space.nodes, "v": cells * 2, "a": cells}
        self.start, total = {}, 0
        for name, size in sizes.items():
            self.start[name] = total
            total += size
        self.size = total
        self.rows, self.cols, self.data, self.lower, self.upper = [], [], [], [], []
        self._structure()
        self._liveness()

    def var(self, name, *index):
        cells, edges, ops = self.problem.shape
        shape = {"x": (cells, edges, ops), "w": (cells, edges, ops), "u": (cells, 2),
                 "z": (cells, self.problem.table.space.nodes), "v": (cells, 2), "a": (cells,)}[name]
        return self.start[name] + int(np.ravel_multi_index(index, shape))

    def row(self, terms, lower, upper):
        """One constraint lower <= sum(coefficient * variable) <= upper."""
        number = len(self.lower)
        for variable, coefficient in terms:
            self.rows.append(number)
            self.cols.append(variable)
            self.data.append(float(coefficient))
        self.lower.append(float(lower))
        self.upper.append(float(upper))

    def _structure(self):
        problem, space = self.problem, self.problem.table.space
        cells, edges, ops = problem.shape
        free = [k for k in space.parameter_free_indices() if k != self.zero]
        for c in range(cells):
            for e in range(edges):
                self.row([(self.var("x", c, e, k), 1) for k in range(ops)],
                         1 if problem.rule == "argmax" else 0, 1)
            if problem.rule == "top2":
                for target in space.intermediate_nodes:
                    self.row([(self.var("x", c, e, k), 1) for e, (_, t) in enumerate(space.edges)
                              if t == target for k in range(ops)], 2, 2)
            if problem.max_parameter_free is not None:
                self.row([(self.var("x", c, e, k), 1) for e in range(edges) for k in free],
                         0, problem.max_parameter_free)

    def _liveness(self):
        space = self.problem.table.space
        cells, edges, ops = self.problem.shape
        non_zero = [k for k in range(ops) if k != self.zero]
        for c in range(cells):
            for e, (source, target) in enumerate(space.edges):
                for k in range(ops):  # w >= x + a - 1
                    self.row([(self.var("x", c, e, k), 1), (self.var("a", c), 1), (self.var("w", c, e, k), -1)],
                             -np.inf, 1)
                    if k in non_zero and source < 2:  # u[source] >= x
                        self.row([(self.var("x", c, e, k), 1), (self.var("u", c, source), -1)], -np.inf, 0)
            for n, node in enumerate(space.intermediate_nodes):  # z >= 1 - sum of kept edges; u[1] >= z
                self.row([(self.var("x", c, e, k), 1) for e, (_, t) in enumerate(space.edges) if t == node
                          for k in non_zero] + [(self.var("z", c, n), 1)], 1, np.inf)
                self.row([(self.var("z", c, n), 1), (self.var("u", c, 1), -1)], -np.inf, 0)
            for s in (0, 1):  # v >= u + a - 1
                self.row([(self.var("u", c, s), 1), (self.var("a", c), 1), (self.var("v", c, s), -1)], -np.inf, 1)
            for later, s in ((c + 1, 1), (c + 2, 0)):  # a[c] >= v[later, s]
                if later < cells:
                    self.row([(self.var("v", later, s), 1), (self.var("a", c), -1)], -np.inf, 0)

    def cost_vector(self, measure):
        vector = np.zeros(self.size)
        table = self.problem.table
        n = table.edge_costs[..., measure].size
        vector[self.start["w"]:self.start["w"] + n] = table.edge_costs[..., measure].reshape(-1)
        vector[self.start["v"]:self.start["v"] + table.pre_costs[..., measure].size] = \
            table.pre_costs[..., measure].reshape(-1)
        return vector

    def solve(self, objective, limits):
        """The choices [L, E] (-1: edge not kept) minimising `objective` (on x) within `limits`, or None."""
        table = self.problem.table
        matrix = sparse.coo_array((self.data, (self.rows, self.cols)), shape=(len(self.lower), self.size))
        constraints = [optimize.LinearConstraint(matrix.tocsr(), self.lower, self.upper)]
        for measure, limit in zip((PARAMS, MACS), limits):
            if limit is not None:
                constraints.append(optimize.LinearConstraint(self.cost_vector(measure)[None, :], -np.inf,
                                                             float(limit - table.fixed[measure])))
        upper = np.ones(self.size)
        upper[:self.start["w"]] = self.problem.choice_bounds()
        lower = np.zeros(self.size)
        for cell in (self.problem.shape[0] - 1, *self.problem.table.always_alive):  # classifier, auxiliary head
            lower[self.var("a", cell)] = 1.0
        full = np.zeros(self.size)
        full[:objective.size] = objective
        result = optimize.milp(full, constraints=constraints, integrality=np.ones(self.size),
                               bounds=optimize.Bounds(lower, upper), options=_OPTIONS)
        if result.status == 2:  # infeasible
            return None
        if not result.success:
            raise RuntimeError(f"budgeted selection: the solver stopped: {result.message}")
        x = np.round(result.x[:self.start["w"]]).reshape(self.problem.shape)
        return np.where(x.max(axis=-1) > 0.5, x.argmax(axis=-1), -1)


def score(problem, choices):
    """The selection score of `choices`: the sum of its kept values."""
    cells, edges = np.nonzero(choices >= 0)
    return float(problem.values[cells, edges, choices[cells, edges]].sum())


def _value_objective(problem):
    values = np.where(np.isfinite(problem.values), problem.values, 0.0)
    return -values.reshape(-1).astype(np.float64)


def best_choices(problem, budget, program=None):
    """The choices of largest score within `budget`; None if no choice fits (`program`: one built already)."""
    program = program or _Program(problem)
    return program.solve(_value_objective(problem), (budget.max_params, budget.max_multiply_adds))


def cheapest(problem, measure, program=None):
    """The smallest params (`PARAMS`) or multiply-adds (`MACS`) any allowed choice has."""
    program = program or _Program(problem)
    choices = program.solve(program.cost_vector(measure), (None, None))
    if choices is None:
        raise UserError("budgeted selection: the rule and the remedies leave no genotype to choose")
    return problem.table.of_choices(choices)[measure]


def check_feasible(problem, budget, binding="run_search"):
    """One line naming the smallest reachable cost unless some genotype fits `budget`."""
    program = _Program(problem)
    if best_choices(problem, budget, program) is not None:
        return
    least_params, least_macs = cheapest(problem, PARAMS, program), cheapest(problem, MACS, program)
    raise UserError(
        f"{binding}.max_params={budget.max_params!r}, {binding}.max_multiply_adds={budget.max_multiply_adds!r}: "
        f"no genotype of this space fits; the smallest reachable evaluation network has {least_params:,} "
        f"parameters and {least_macs:,} multiply-adds (each measure at its cheapest genotype)")


def pareto_front(problem, points=12):
    """The non-dominated (score up, params down, multiply-adds down) picks over a sweep of budgets.

    Each measure's range, from its cheapest reachable value to the
    unbudgeted pick's, is cut in `points` budgets; each budget's exact
    optimum is a candidate. Returns [{"score", "params", "multiply_adds",
    "choices"}] sorted by parameters.
    """
    program = _Program(problem)  # its constraints are built once for every budget below
    free = best_choices(problem, Budget(), program)
    candidates = {free.tobytes(): free}
    top = problem.table.of_choices(free)
    for measure in (PARAMS, MACS):
        low = cheapest(problem, measure, program)
        for limit in np.linspace(low, top[measure], points):
            limits = [None, None]
            limits[measure] = int(round(limit))
            choices = program.solve(_value_objective(problem), tuple(limits))
            if choices is not None:
                candidates[choices.tobytes()] = choices
    rows = []
    for choices in candidates.values():
        params, macs = problem.table.of_choices(choices)
        rows.append({"score": score(problem, choices), "params": params, "multiply_adds": macs,
                     "choices": choices.tolist()})

    def dominated(a):
        return any(b["score"] >= a["score"] and b["params"] <= a["params"] and b["multiply_adds"] <= a["multiply_adds"]
                   and (b["score"], b["params"], b["multiply_adds"]) != (a["score"], a["params"], a["multiply_adds"])
                   for b in rows)

    front = {(r["score"], r["params"], r["multiply_adds"]): r for r in rows if not dominated(r)}
    return sorted(front.values(), key=lambda r: (r["params"], r["multiply_adds"]))


def unscored_below(values):
    """Perturbation's unscored ops (-inf) valued just below their edge's lowest score, so a budget may take them."""
    values = np.array(values, np.float64)
    finite = np.where(np.isfinite(values), values, np.inf).min(axis=-1, keepdims=True)
    return np.where(np.isfinite(values), values, finite - 1.0)


def prepare_budget(budget, input_shape, num_classes, num_cells, space, rule, remedies):
    """The CostTable of the evaluation network, once a genotype is known to fit `budget` (else one line).

    Run before the search trains. The network is the one `build_eval_net`
    builds with its bindings: bind its `channels` (and stem) in the
    search's configuration as in the train step's.
    """
    table = measure_costs(input_shape, num_classes, num_cells, space)
    allowed = tuple(not (remedies.exclude_zero and name == "zero") for name in space.primitives)
    problem = Problem(np.zeros((num_cells, len(space.edges), len(space.primitives))), table, rule, allowed,
                      remedies.max_parameter_free)
    check_feasible(problem, budget)
    return table


def front_record(front, chosen, budget, table, space):
    """pareto.json's record: the budget, the chosen pick's cost and score, and the front with its genotypes' codes."""
    def code(choices):
        return [[space.primitives[k] if k >= 0 else None for k in row] for row in choices]

    return {"budget": {"max_params": budget.max_params, "max_multiply_adds": budget.max_multiply_adds},
            "fixed": {"params": int(table.fixed[PARAMS]), "multiply_adds": int(table.fixed[MACS])},
            "chosen": {key: chosen[key] for key in ("score", "params", "multiply_adds")},
            "front": [{"score": row["score"], "params": row["params"], "multiply_adds": row["multiply_adds"],
                       "ops": code(row["choices"])} for row in front]}
