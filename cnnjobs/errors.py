"""The one exception type for errors a user can cause (bad config, data or arguments)."""

from __future__ import annotations


class JobError(Exception):
    """A problem with the user's input; the CLI prints it as one line and exits with code 2.

    The message is written for the user: it names the file and the key or path at fault. It is one line: a line
    break inside it (a file name can hold one) is shown as `\\n`, so that it cannot pass for another message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class TrainingFailed(Exception):
    """Training started but failed; the CLI exits with code 1 and points at the run's logs."""

    def __init__(self, message: str, run_dir: str) -> None:
        super().__init__(message)
        self.run_dir = run_dir


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run cleanly; its folder says `interrupted` and `resume` is the command that continues it."""

    def __init__(self, run_dir: str, resume: str) -> None:
        super().__init__(resume)
        self.run_dir, self.resume = run_dir, resume
