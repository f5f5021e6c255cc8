"""`with thing:` for the lab's parts that start and stop (servers, the lab, the callers)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Running(ABC):
    """Starts on entering a `with` block and stops on leaving it, whatever happened inside."""

    @abstractmethod
    def start(self) -> Self:
        """Start, and return self once ready."""

    @abstractmethod
    def stop(self) -> object:
        """Stop everything started."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
