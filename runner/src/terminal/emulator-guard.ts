import type { Terminal } from "@xterm/headless";

/** The private parts of @xterm/headless 6 that the guard uses. */
interface Core {
  _bufferService: {
    buffer: { x: number; y: number; ybase: number; lines: { get(y: number): { isWrapped: boolean } | undefined } };
  };
  _inputHandler: {
    parse(data: string | Uint8Array, promiseResult?: boolean): undefined | Promise<boolean>;
    _restrictCursor(maxCol: number): void;
    _eraseInBufferLine(y: number, start: number, end: number, clearWrap: boolean, respectProtect: boolean): void;
    _resetBufferLine(y: number, respectProtect: boolean): void;
  };
}

/**
 * Keeps faults of @xterm/headless 6.0.0 out of the runner's screen model:
 *
 * - ED 1 (erase above, and DECSED 1) with the cursor in the last column clears the wrap flag of line
 *   `y + 1` counted from the top of the scrollback instead of the screen line below the cursor, and
 *   throws, from a timer, which ends the process, when there is no such line: `printf '\e[99;999H\e[1J'`
 *   in a fresh terminal ended the runner. Here it clears the line below the cursor, as meant.
 * - Any other exception in the parser costs the rest of the chunk being interpreted, not the runner.
 */
export function guardEmulator(term: Terminal): void {
  const core = (term as unknown as { _core: Core })._core;
  const handler = core._inputHandler;
  const eraseAbove = (params: (number | number[])[], selective: boolean): boolean => {
    const buffer = core._bufferService.buffer;
    const cols = term.cols;
    if (params[0] !== 1 || Math.min(buffer.x, cols) + 1 < cols) return false;
    handler._restrictCursor(cols);
    handler._eraseInBufferLine(buffer.y, 0, cols, true, selective);
    for (let y = buffer.y; y-- > 0; ) handler._resetBufferLine(y, selective);
    const below = buffer.lines.get(buffer.ybase + buffer.y + 1);
    if (below) below.isWrapped = false;
    return true;
  };
  term.parser.registerCsiHandler({ final: "J" }, (params) => eraseAbove(params, false));
  term.parser.registerCsiHandler({ prefix: "?", final: "J" }, (params) => eraseAbove(params, true));
  const parse = handler.parse.bind(handler);
  handler.parse = (data, promiseResult) => {
    try {
      return parse(data, promiseResult);
    } catch {
      return undefined;
    }
  };
}
