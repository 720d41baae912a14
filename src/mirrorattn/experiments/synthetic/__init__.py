"""The paper's synthetic experiments (paper.md sections 4-5): local convergence, joint (W, v)
training, the regularisation path and the K/Q form, driven by ``mirrorattn synthetic ...``.

Modules: ``trainer`` (batched l_p mirror descent), ``local``, ``joint``, ``regpath``, ``kq``
(one experiment each: config dataclass + ``run_*`` function), ``presets``, ``runner`` (run
folders, resumable pieces, worker processes), ``figures`` and ``cli``.
"""
