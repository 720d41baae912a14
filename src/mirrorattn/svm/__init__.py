"""Max-margin solvers: l_p-AttSVM for the attention weights, l_p-SVM for the decoder, their joint
form, and the nuclear-norm AttSVM of the K/Q parametrisation (paper.md section 3).

    from mirrorattn.svm import attention_svm
    res = attention_svm(X, z, alpha, p=1.75)      # res.W, res.objective, res.support, res.duals

p must lie in [P_MIN, P_MAX] = [1.001, 100] (:data:`mirrorattn.mirror.P_MIN`, measured there). Every
array must hold real numbers (bool and int are cast to float64; complex, object and string arrays are
refused). Every solver validates its input first, builds the constraints as one stacked matrix
expression, checks the solver status, and switches to constraint generation (active set) above
5,000 constraints. Errors are :class:`SVMError` (a ``ValueError``) subclasses with messages that
name the offending samples.
"""

from mirrorattn.svm.attention import attention_svm
from mirrorattn.svm.decoder import decoder_svm, joint_svm
from mirrorattn.svm.errors import InfeasibleSVMError, InvalidSamplesError, SVMError, SVMInputError
from mirrorattn.svm.nuclear import attention_svm_nuclear
from mirrorattn.svm.result import AttentionSVMResult, DecoderSVMResult, JointSVMResult

__all__ = [
    "AttentionSVMResult",
    "DecoderSVMResult",
    "InfeasibleSVMError",
    "InvalidSamplesError",
    "JointSVMResult",
    "SVMError",
    "SVMInputError",
    "attention_svm",
    "attention_svm_nuclear",
    "decoder_svm",
    "joint_svm",
]
