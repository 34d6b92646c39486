"""The two errors a kernel author sees: one at compile time, one at run time.

Users of a DSL live on good error messages, so both carry the kernel's own source
location rather than a traceback into the compiler or the generated code.
"""

from __future__ import annotations


class CompilationError(Exception):
    """Kernel code the frontend cannot compile.

    `str()` shows the kernel, the file and line, the offending source line and a caret
    under the column, then the message — everything needed without a traceback.
    """

    def __init__(self, message: str, *, kernel: str, file: str, line: int,
                 source_line: str = "", col: int = 0) -> None:
        self.message = message
        self.kernel = kernel
        self.file = file
        self.line = line
        self.source_line = source_line
        self.col = col
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"in kernel '{self.kernel}', {self.file}:{self.line}:"
        if not self.source_line:
            return f"{head}\n{self.message}"
        text = self.source_line.rstrip()
        stripped = text.lstrip()
        caret_col = max(0, self.col - (len(text) - len(stripped)))
        return f"{head}\n    {stripped}\n    {' ' * caret_col}^\n{self.message}"

    def __reduce__(self):
        return (_rebuild_compilation_error, (self.message, self.kernel, self.file, self.line,
                                             self.source_line, self.col))


def _rebuild_compilation_error(message, kernel, file, line, source_line, col):
    return CompilationError(message, kernel=kernel, file=file, line=line,
                            source_line=source_line, col=col)


class KernelFault(Exception):
    """A kernel touched memory outside a tensor (raised by the CPU backend's sanitizer)."""

    def __init__(self, message: str, *, kernel: str, source: str = "", offset: int | None = None,
                 size: int | None = None) -> None:
        self.message = message
        self.kernel = kernel
        self.source = source
        self.offset = offset
        self.size = size
        parts = [f"in kernel '{kernel}': {message}"]
        if source:
            parts.append(f"    {source.strip()}")
        if offset is not None:
            parts.append(f"offset {offset} is outside the tensor of {size} elements")
        super().__init__("\n".join(parts))

    def __reduce__(self):
        return (_rebuild_kernel_fault, (self.message, self.kernel, self.source, self.offset, self.size))


def _rebuild_kernel_fault(message, kernel, source, offset, size):
    return KernelFault(message, kernel=kernel, source=source, offset=offset, size=size)
