"""Attacks and random perturbations for the robustness suite.

- ``config``:   attack names, norms, epsilons and their labels, step sizes, AutoAttack presets;
- ``rand``:     counter-based per-example random numbers (batch-size independent);
- ``adapters``: torchattacks subclasses (FGSM, PGD-Linf/L2 with supplied random starts) and the
                AutoAttack runner, all on our WrappedModel (normalisation inside, natural input bounds);
- ``sweep``:    epsilon sweeps over nested balls that attack only the survivors;
- ``noise``:    Gaussian / uniform / salt-and-pepper noise, random-ball noise, input-gradient statistics.

Everything here touches torch; the metrics computed from its per-example columns are in
``audit.metrics.robustness`` (numpy only).
"""
