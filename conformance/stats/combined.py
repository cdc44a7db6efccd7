"""An input-conditional nonconformity score: several components, one rule fixed on the fit part.

How far an output lies from other approved outputs mostly measures what it is
*about*, and that is set by its input. So besides the plain kNN distance this
score asks whether the output is unusual **for its input**:

``knn``        cosine distance to the k-th nearest approved (fit) output
``residual``   Mahalanobis norm (OAS shrinkage covariance) of the output embedding's
               residual after a ridge regression on the input embedding
``relevance``  1 - cosine(input, output): how little the output is about its input
``mahalanobis`` Mahalanobis distance of the output embedding (OAS shrinkage)
descriptors    two-sided robust z of each text descriptor (length, refusal, script, ...)

The combination rule is fixed on the fit part alone: each component is
standardised by its median and the larger of its MAD and its spread to the 99th percentile over
*cross-fitted* fit-part values (two folds split by prompt, each scored against a model fitted on
the other). The relevance is measured against what is usual **for the input**: the mean relevance
of the approved outputs to the ``relevance_neighbours`` nearest fit inputs is subtracted (a
follow-up such as "rewrite it more formally" has answers that share few words with it; a question
has answers about it). The standardised values are then grouped into **facets** (:data:`FACETS`),
one per property of an output: components that measure the same property are averaged, so that
the property has one vote, not one per measurement, and counts of format elements are compared
on a log scale. The facets are combined by a smooth maximum, ``log(sum(exp(asinh(f_j))))``, which
is non-decreasing in every component, strictly increasing in the continuous ones and continuous
(so ties, which would make the test conservative, do not occur). Why facets: with one vote per
component, an approved answer with eight Markdown headings (z = 20 on one count) set the
calibration maximum in most cells, and no refusal or answer to another question could exceed it
(docs/method.md, "The score"). The calibration part then only supplies the scores that turn a
new score into a p-value, so the split-conformal guarantee holds exactly whatever the components,
facets and rule are.

Input novelty (the input's distance to the nearest approved input, turned into
its own conformal p-value) is kept out of the score and reported apart, so a
reviewer can tell "unusual output for its input" from "unusual input".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from conformance.stats.components import (
    Components,
    InputBank,
    kth_cosine_distance,
    mahalanobis,
    oas_precision,
    smooth_max,
    unit_rows,
)
from conformance.stats.conformal import conformal_p_values

EMBEDDING_COMPONENTS = ("knn", "residual", "relevance", "mahalanobis")

#: The facets of the ``"facets"`` combination: (name, how, components). ``mean`` averages the members'
#: z-values (several measurements of one property), ``max`` takes the largest (alternative signs of one
#: property: another script, or another language in Latin script), ``mean_log`` averages after
#: ``2.576 * log(1 + z / 2.576)`` (counts of format elements: beyond its unit, eight headings are not
#: eight times as unusual as one), ``max_of_min`` takes pairs of members, the smaller of each pair, then the
#: largest (the language: unusual among the approved answers *and* holding more of another language than the
#: input, so that an answer in Spanish to a question in Spanish is not unusual in a cell of mostly English prompts,
#: nor an answer in French to an English prompt that asks for one in a cell where answers in other languages are
#: common; a baseline built before the input-relative descriptors takes ``max`` over the ones it has). A component
#: named in no facet is a facet of its own.
FACETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("distance", "mean", ("knn", "mahalanobis")),
    ("residual", "max", ("residual",)),
    ("relevance", "max", ("relevance",)),
    ("length", "mean", ("log_tokens", "log_chars", "window_coverage")),
    ("refusal", "max", ("refusal_markers",)),
    ("language", "max_of_min", ("non_ascii_letters", "non_ascii_letters_vs_input",
                                "foreign_function_words", "foreign_function_words_vs_input")),
    ("format", "mean_log", ("list_lines", "heading_lines", "code_blocks")),
)
#: ``facets``: the smooth maximum over :data:`FACETS` (the default);
#: ``smooth_max``: the smooth maximum over every component (what baselines built before used).
COMBINATIONS = ("facets", "smooth_max")
#: The rule of the score the *batch* rank tests use for baselines with facets: a batch of a base model's
#: answers differs a little in many components at once, which the smooth maximum over every component
#: adds up and the facets average away (docs/validation.md, section 5). A per-output verdict needs a score whose
#: approved maximum is low; a batch test one that moves on average.
BATCH_COMBINATION = "smooth_max"


class CombinedScorer:
    """Input-conditional combined nonconformity score with split-conformal p-values.

    Lifecycle: ``fit`` on the fit part, ``conformalize`` on the disjoint
    calibration part, then ``p_values`` / ``input_p_values`` for new outputs.

    Parameters
    ----------
    k : int, default 5
        Neighbour rank of the kNN component.
    ridge : float, default 1.0
        Ridge penalty of the input -> output regression.
    seed : int, default 0
        Seed of the two-fold split by prompt used to standardise components.
    use_descriptors : bool, default True
        Whether text descriptors enter the score.
    combination : {"facets", "smooth_max"}, default "facets"
        The rule: smooth maximum over :data:`FACETS`, or over every component (baselines built before
        facets were introduced).
    relevance_neighbours : int, default 10
        The relevance is measured against the mean relevance of the approved outputs to this many
        nearest fit inputs; 0 takes it as it is (baselines built before).
    descriptor_names : sequence of str, optional
        Names of the descriptor columns (:data:`conformance.stats.descriptors.KNOWN_DESCRIPTORS`), which the facets
        group; without them each descriptor is a facet of its own.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(120, 6)); y = x @ rng.normal(size=(6, 6)) + rng.normal(size=(120, 6))
    >>> groups = np.arange(120)
    >>> s = CombinedScorer().fit(y[:80], x[:80], groups=groups[:80]).conformalize(y[80:], x[80:])
    >>> p = s.p_values(y[:3] + 5, x[:3])
    >>> bool(np.all((p > 0) & (p <= 1)))
    True
    """

    def __init__(
        self, *, k: int = 5, ridge: float = 1.0, seed: int = 0, use_descriptors: bool = True,
        combination: str = "facets", relevance_neighbours: int = 10, descriptor_names: Sequence[str] | None = None,
    ) -> None:
        self.k = k
        self.ridge = ridge
        self.seed = seed
        self.use_descriptors = use_descriptors
        self.combination = combination
        self.relevance_neighbours = relevance_neighbours
        self.descriptor_names = None if descriptor_names is None else [str(n) for n in descriptor_names]

    # -- validation -------------------------------------------------------------------------
    def _check(self, y: np.ndarray, x: np.ndarray, d: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = np.asarray(y, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        if y.ndim != 2 or x.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"outputs and inputs must be 2-D arrays with the same number of rows, "
                             f"got shapes {y.shape} and {x.shape}")
        if d is None:
            d = np.zeros((y.shape[0], 0))
        d = np.asarray(d, dtype=np.float64)
        if d.ndim != 2 or d.shape[0] != y.shape[0]:
            raise ValueError(f"descriptors must be a 2-D array with one row per output ({y.shape[0]}), got {d.shape}")
        if hasattr(self, "n_features_in_") and y.shape[1] != self.n_features_in_:
            raise ValueError(f"outputs must have {self.n_features_in_} columns (as at fit), got {y.shape[1]}")
        return y, x, d

    # -- fit ----------------------------------------------------------------------------------
    def fit(
        self, outputs: np.ndarray, inputs: np.ndarray, descriptors: np.ndarray | None = None, *,
        groups: Sequence[object], descriptor_units: Sequence[float] | None = None,
    ) -> CombinedScorer:
        """Fit the components and fix the combination rule on the fit part only.

        ``groups`` gives each row's prompt; the two folds used to standardise
        the components never split a prompt. ``descriptor_units`` gives, per
        descriptor column, the smallest difference that matters (one heading, a
        share of 0.05): a descriptor's scale is at least its unit / 2.576, so one
        unit beyond the median is at most a z of 2.6, however constant the fit
        part was. Without it the floor is 1e-3 (as baselines built before it).
        """
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if not self.ridge > 0:
            raise ValueError(f"ridge must be > 0, got {self.ridge!r}")
        if self.combination not in COMBINATIONS:
            raise ValueError(f"combination must be one of {', '.join(COMBINATIONS)}, got {self.combination!r}")
        if not isinstance(self.relevance_neighbours, int) or self.relevance_neighbours < 0:
            raise ValueError(f"relevance_neighbours must be a non-negative integer, got {self.relevance_neighbours!r}")
        y, x, d = self._check(outputs, inputs, descriptors)
        if self.descriptor_names is not None and len(self.descriptor_names) != d.shape[1]:
            raise ValueError(f"descriptor_names must name the {d.shape[1]} descriptor columns, "
                             f"got {len(self.descriptor_names)}: {self.descriptor_names}")
        units = None if descriptor_units is None else np.asarray(descriptor_units, dtype=np.float64)
        if units is not None and (units.shape != (d.shape[1],) or not np.all(units > 0)):
            raise ValueError(f"descriptor_units must be {d.shape[1]} positive numbers (one per descriptor column), "
                             f"got {descriptor_units!r}")
        if len(groups) != y.shape[0]:
            raise ValueError(f"groups must have one entry per row ({y.shape[0]}), got {len(groups)}")
        keys = sorted({str(g) for g in groups})
        if len(keys) < 4:
            raise ValueError(f"the fit part needs outputs for at least 4 distinct prompts, got {len(keys)}")
        self.n_features_in_ = y.shape[1]
        order = np.random.default_rng(self.seed).permutation(len(keys))
        fold_of = {keys[j]: i % 2 for i, j in enumerate(order)}
        fold = np.array([fold_of[str(g)] for g in groups])
        cross = np.zeros((y.shape[0], len(EMBEDDING_COMPONENTS)))
        residuals = np.zeros_like(y)
        for f in (0, 1):
            train, test = fold != f, fold == f
            part = Components(y[train], x[train], k=self.k, ridge=self.ridge)
            residuals[test] = part.residuals(y[test], x[test])
            cross[test] = part(y[test], x[test])
        self.components_ = Components(y, x, k=self.k, ridge=self.ridge)
        # Residual covariance from cross-fitted residuals: in-sample ridge residuals are too small.
        self.components_.res_mean, self.components_.res_precision = oas_precision(residuals)
        for f in (0, 1):
            # The residual component of the cross-fitted values, with a covariance estimated on the
            # *other* fold: a new output's residual is out of sample for the covariance too. With the
            # covariance of all residuals (in sample, 384 dimensions from tens of rows) the fit-part
            # values came out far smaller than any new output's, and this one component then decided
            # the whole score.
            mean_f, precision_f = oas_precision(residuals[fold != f])
            cross[fold == f, 1] = mahalanobis(residuals[fold == f], mean_f, precision_f)
        self.relevance_bank_: InputBank | None = None
        if self.relevance_neighbours:
            # Relevance against what is usual for the input, cross-fitted like the other components: each
            # fold's expectation comes from the other fold's outputs (a new output's input is not a fit input).
            relevance = 1.0 - np.einsum("ij,ij->i", unit_rows(x), unit_rows(y))[:, None]
            for f in (0, 1):
                bank = InputBank(x[fold != f], relevance[fold != f])
                cross[fold == f, 2] -= bank.expected(x[fold == f], self.relevance_neighbours)[:, 0]
            self.relevance_bank_ = InputBank(x, relevance)
        self.location_, self.scale_ = self._robust(cross)
        self.descriptor_location_, self.descriptor_scale_ = self._robust(
            d, two_sided=True, floor=None if units is None else units / 2.576)
        self.n_fit_ = y.shape[0]
        self.fit_inputs_ = unit_rows(np.unique(x, axis=0))
        return self

    @staticmethod
    def _robust(
        values: np.ndarray, *, two_sided: bool = False, floor: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Location (median) and scale of each column, the scale set by the column's *tail*.

        The scale is the larger of the MAD and the spread to the 99th percentile, scaled as for a
        normal variable (so a column's 99th percentile of fit-part values lands near z = 2.3, or
        2.6 for the two-sided descriptors). With the MAD alone, a heavy-tailed column (a count of
        list lines or headings, mostly 0) gave ordinary approved outputs z-values in the hundreds,
        and the smooth maximum then drowned the components that carry the signal: an answer to
        another question has input relevance beyond every approved output, but the combination
        hid it.

        ``floor`` (per column; 1e-3 without it) bounds the scale from below. A descriptor that is
        constant on the fit part (no Markdown heading in 60 approved answers) otherwise gets the
        1e-3 floor, and an approved calibration answer with eight headings then scores z = 8,000:
        such approved outputs set the calibration maximum, and no refusal or language switch
        could exceed it.
        """
        if values.shape[1] == 0:
            return np.zeros(0), np.ones(0)
        loc = np.median(values, axis=0)
        dev = np.abs(values - loc) if two_sided else values - loc
        mad = 1.4826 * np.median(np.abs(values - loc), axis=0)
        tail = np.quantile(dev, 0.99, axis=0) / (2.576 if two_sided else 2.326)
        return loc, np.maximum(np.maximum(mad, tail), 1e-3 if floor is None else floor)

    # -- scores -------------------------------------------------------------------------------
    def _fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise RuntimeError("call fit before scoring")

    def standardised_components(
        self, outputs: np.ndarray, inputs: np.ndarray, descriptors: np.ndarray | None = None
    ) -> np.ndarray:
        """Each component as a z-value (embedding components one-sided, descriptors two-sided)."""
        self._fitted()
        y, x, d = self._check(outputs, inputs, descriptors)
        values = self.components_(y, x)
        if self.relevance_bank_ is not None:
            values[:, 2] -= self.relevance_bank_.expected(x, self.relevance_neighbours)[:, 0]
        z = (values - self.location_) / self.scale_
        if self.use_descriptors and self.descriptor_location_.size:
            if d.shape[1] != self.descriptor_location_.size:
                raise ValueError(f"descriptors must have {self.descriptor_location_.size} columns, got {d.shape[1]}")
            z = np.hstack([z, np.abs(d - self.descriptor_location_) / self.descriptor_scale_])
        return z

    def score_samples(
        self, outputs: np.ndarray, inputs: np.ndarray, descriptors: np.ndarray | None = None, *,
        combination: str | None = None,
    ) -> np.ndarray:
        """The combined nonconformity score: larger is more unusual for the input. ``combination``
        overrides the baseline's rule (the batch rank tests use ``"smooth_max"``, see
        :data:`BATCH_COMBINATION`)."""
        z = self.standardised_components(outputs, inputs, descriptors)
        return smooth_max(self.facet_values(z) if (combination or self.combination) == "facets" else z)

    def facet_names(self, n_columns: int) -> list[str]:
        """The facets :meth:`facet_values` returns, in order, for ``n_columns`` standardised components."""
        return [name for name, _, _ in self._facet_plan(n_columns)]

    def facet_values(self, z: np.ndarray) -> np.ndarray:
        """Standardised components (as :meth:`standardised_components` returns them) grouped by facet."""
        columns = []
        for _, how, idx in self._facet_plan(z.shape[1]):
            part = z[:, idx]
            if how == "mean_log":
                part = 2.576 * np.log1p(np.maximum(part, 0.0) / 2.576)
            if how == "max_of_min":
                part = part.reshape(part.shape[0], -1, 2).min(axis=2)
            columns.append(part.max(axis=1) if how in ("max", "max_of_min") else part.mean(axis=1))
        return np.column_stack(columns)

    def _facet_plan(self, n_columns: int) -> list[tuple[str, str, list[int]]]:
        names = list(EMBEDDING_COMPONENTS)
        names += self.descriptor_names or [f"descriptor {j}" for j in range(n_columns - len(names))]
        index = {name: j for j, name in enumerate(names[:n_columns])}
        plan, used = [], set()
        for facet, how, members in FACETS:
            idx = [index[m] for m in members if m in index]
            if how == "max_of_min" and len(idx) != len(members):
                how = "max"  # a baseline built before the input-relative descriptors: the ones it has
            if idx:
                plan.append((facet, how, idx))
                used.update(idx)
        plan += [(name, "max", [j]) for name, j in index.items() if j not in used]
        return plan

    def residual_embeddings(self, outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """What each output embedding holds beyond what its input predicts: the output minus the ridge
        regression's prediction from the input (fitted on the fit part). The batch MMD and energy tests
        compare these, so that a batch about other topics than the calibration part is not a difference
        in itself, while a change in how the model answers its inputs is."""
        self._fitted()
        return self.components_.residuals(np.asarray(outputs, dtype=np.float64), np.asarray(inputs, dtype=np.float64))

    def input_novelty(self, inputs: np.ndarray) -> np.ndarray:
        """Cosine distance of each input to the nearest approved (fit) input."""
        self._fitted()
        return kth_cosine_distance(np.asarray(inputs, dtype=np.float64), self.fit_inputs_, 1)

    # -- conformal ----------------------------------------------------------------------------
    def conformalize(
        self, outputs: np.ndarray, inputs: np.ndarray, descriptors: np.ndarray | None = None
    ) -> CombinedScorer:
        """Score the disjoint calibration part; its sorted scores turn new scores into p-values."""
        self.calibration_scores_ = np.sort(self.score_samples(outputs, inputs, descriptors))
        self.input_calibration_scores_ = np.sort(self.input_novelty(inputs))
        return self

    def _conformalized(self) -> None:
        if not hasattr(self, "calibration_scores_"):
            raise RuntimeError("call conformalize before p_values")

    def p_values(self, outputs: np.ndarray, inputs: np.ndarray, descriptors: np.ndarray | None = None) -> np.ndarray:
        """Split-conformal p-values of the combined score."""
        self._conformalized()
        return conformal_p_values(self.score_samples(outputs, inputs, descriptors), self.calibration_scores_)

    def input_p_values(self, inputs: np.ndarray) -> np.ndarray:
        """Split-conformal p-values of input novelty (reported apart from the output's verdict)."""
        self._conformalized()
        return conformal_p_values(self.input_novelty(inputs), self.input_calibration_scores_)

    # -- storage ------------------------------------------------------------------------------
    #: The keys of :meth:`params`, as a baseline's scorer metadata stores them (older baselines lack the last
    #: three; :meth:`from_state` knows their old values).
    PARAM_NAMES = ("k", "ridge", "seed", "use_descriptors", "combination", "relevance_neighbours",
                   "descriptor_names")

    _STATE = ("reference", "x_mean", "y_mean", "coef", "mean", "precision", "res_mean", "res_precision")

    def params(self) -> dict[str, object]:
        """The constructor arguments, as JSON-able values (stored in the baseline's scorer)."""
        return {"k": self.k, "ridge": self.ridge, "seed": self.seed, "use_descriptors": self.use_descriptors,
                "combination": self.combination, "relevance_neighbours": self.relevance_neighbours,
                "descriptor_names": self.descriptor_names}

    def to_state(self) -> dict[str, np.ndarray]:
        """Every fitted array, by name (stored without pickle in the baseline's npz)."""
        self._conformalized()
        state = {f"components.{name}": getattr(self.components_, name) for name in self._STATE}
        state.update(location=self.location_, scale=self.scale_, descriptor_location=self.descriptor_location_,
                     descriptor_scale=self.descriptor_scale_, fit_inputs=self.fit_inputs_,
                     calibration_scores=self.calibration_scores_,
                     input_calibration_scores=self.input_calibration_scores_)
        if self.relevance_bank_ is not None:
            state.update(relevance_bank_inputs=self.relevance_bank_.inputs,
                         relevance_bank_values=self.relevance_bank_.values)
        return {name: np.asarray(value) for name, value in state.items()}

    @classmethod
    def from_state(cls, params: dict[str, object], state: dict[str, np.ndarray]) -> CombinedScorer:
        """Rebuild a fitted, conformalized scorer from :meth:`params` and :meth:`to_state`."""
        # Baselines built before the facets and the input-relative relevance stored neither key.
        scorer = cls(**{"combination": "smooth_max", "relevance_neighbours": 0, **params})  # type: ignore[arg-type]
        components = Components.__new__(Components)
        components.k = scorer.k
        for name in cls._STATE:
            setattr(components, name, state[f"components.{name}"])
        scorer.components_ = components
        scorer.n_features_in_ = int(components.reference.shape[1])
        scorer.location_, scorer.scale_ = state["location"], state["scale"]
        scorer.descriptor_location_, scorer.descriptor_scale_ = state["descriptor_location"], state["descriptor_scale"]
        scorer.fit_inputs_ = state["fit_inputs"]
        scorer.n_fit_ = int(components.reference.shape[0])
        scorer.calibration_scores_ = state["calibration_scores"]
        scorer.input_calibration_scores_ = state["input_calibration_scores"]
        scorer.relevance_bank_ = None
        if scorer.relevance_neighbours:
            scorer.relevance_bank_ = InputBank.__new__(InputBank)
            scorer.relevance_bank_.inputs = state["relevance_bank_inputs"]
            scorer.relevance_bank_.values = state["relevance_bank_values"]
        return scorer
