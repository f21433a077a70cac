import xtermHeadless from "@xterm/headless";

const { Terminal } = xtermHeadless;
/** A headless terminal. */
export type Term = InstanceType<typeof Terminal>;

// What the screen snapshot tests compare: a terminal's state, cell by cell, as the strings of `observe`.

/** A fresh terminal as a client has it (xterm.js's defaults), with a small scrollback. */
export function newTerminal(cols: number, rows: number, scrollback = 50): Term {
  return new Terminal({ cols, rows, scrollback, allowProposedApi: true });
}

/** Writes to a terminal and waits until it has interpreted the data. */
export function write(term: Term, data: string | Uint8Array): Promise<void> {
  return new Promise((resolve) => term.write(data, resolve));
}

/** The private parts of xterm.js the comparison reads: what the public API does not show. */
interface Internals {
  _core: {
    coreService: { isCursorHidden: boolean; decPrivateModes: { cursorStyle?: string; cursorBlink?: boolean } };
    coreMouseService: { activeEncoding: string };
    optionsService: { rawOptions: { convertEol: boolean; cursorBlink: boolean } };
    _oscLinkService: { getLinkData(id: number): { id?: string; uri: string } | undefined };
    _inputHandler: { _windowTitle: string; _iconName: string };
  };
}

interface InternalCell {
  fg: number;
  bg: number;
  extended: { _ext: number; urlId: number };
  getUnderlineColor(): number;
  getUnderlineColorMode(): number;
}

/**
 * A cell as a string of everything that shows: text, width, colours, attributes, underline style and
 * colour, link, protection. (A link shows as a dashed underline in xterm.js: the underline here is the
 * one set by SGR, and the link is its data, so that a link whose lines have all been deleted, which
 * snapshots leave out, counts as none.)
 */
function describeCell(term: Term, cell: xtermHeadless.IBufferCell): string {
  const internal = cell as unknown as InternalCell;
  const extended = internal.bg & 0x10000000;
  const underline = internal.fg & 0x10000000 ? (extended ? (internal.extended._ext >> 26) & 7 : 1) : 0;
  const flags = [
    cell.isBold() && "b",
    cell.isDim() && "d",
    cell.isItalic() && "i",
    underline && `u${underline}`,
    cell.isBlink() && "k",
    cell.isInverse() && "r",
    cell.isInvisible() && "h",
    cell.isStrikethrough() && "s",
    cell.isOverline() && "o",
    internal.bg & 0x20000000 && "p",
  ]
    .filter(Boolean)
    .join("");
  const link =
    extended && internal.extended.urlId ? (withLinks.has(term) ? linkOf(term, internal.extended.urlId) : "link") : "";
  const underlineColor = underline ? `${internal.getUnderlineColorMode()}:${internal.getUnderlineColor()}` : "";
  return [
    JSON.stringify(cell.getChars()),
    cell.getWidth(),
    `${cell.getFgColorMode()}:${cell.getFgColor()}`,
    `${cell.getBgColorMode()}:${cell.getBgColor()}`,
    flags,
    underlineColor,
    link,
  ].join(" ");
}

function linkOf(term: Term, urlId: number): string {
  const data = (term as unknown as Internals)._core._oscLinkService.getLinkData(urlId);
  return data ? `${data.id ?? ""}@${data.uri}` : "";
}

/** Terminals observed with their links' data (else only whether a cell has a link). */
const withLinks = new WeakSet<Term>();

/** Terminals with cells a snapshot can only approximate (see describeBuffer), once observed. */
export const approximated = new WeakSet<Term>();

/** A buffer's lines (all of them, or the screen's: the alternate buffer has no scrollback to show). */
function describeBuffer(term: Term, buffer: xtermHeadless.IBuffer, screenOnly = false) {
  const lines: string[] = [];
  const cells: string[] = [];
  for (let y = screenOnly ? buffer.baseY : 0; y < buffer.length; y++) {
    const line = buffer.getLine(y);
    if (!line) continue;
    const row: string[] = [];
    for (let x = 0; x < term.cols; x++) {
      const cell = line.getCell(x);
      if (cell) row.push(describeCell(term, cell));
    }
    // What no sequence makes, only resizing or ICH next to wide characters, and a snapshot writes as
    // close as it can: a wide character cut by the last column (an empty cell), a wide character whose
    // right half became an empty cell (its right half again), that right half alone (an empty cell).
    const width = (x: number) => line.getCell(x)?.getWidth();
    const cut = width(term.cols - 1) === 2;
    if (cut) row[term.cols - 1] = (row[term.cols - 1] ?? "").replace(/^".*" 2 /, '"" 1 ');
    for (let x = 0; x < term.cols; x++) {
      if (x > 0 && width(x - 1) === 2 && width(x) === 1 && !line.getCell(x)?.getChars()) {
        row[x] = (row[x - 1] ?? "").replace(/^".*" 2 /, '"" 0 ');
      } else if (width(x) === 0 && !line.getCell(x)?.getChars() && (x === 0 || width(x - 1) !== 2)) {
        row[x] = ['""', 1, "0:-1", "0:-1", "", "", ""].join(" ");
      } else continue;
      approximated.add(term);
    }
    if (cut) approximated.add(term);
    const text = cut
      ? `${line.translateToString(false, 0, term.cols - 1)} `
      : line.translateToString(false, 0, term.cols);
    lines.push(`${line.isWrapped ? "~" : " "}${text}`);
    cells.push(`${lines.length - 1}: ${row.join(" | ")}`);
  }
  return { lines, cursor: [buffer.cursorX, buffer.cursorY], baseY: screenOnly ? 0 : buffer.baseY, cells };
}

/** Everything compared: both buffers' lines and cells (the normal one with its scrollback), cursors, modes. */
export function observe(term: Term, { links = true } = {}) {
  if (links) withLinks.add(term);
  else withLinks.delete(term);
  const core = (term as unknown as Internals)._core;
  const active = term.buffer.active.type;
  return {
    size: [term.cols, term.rows],
    active,
    // The normal buffer's cursor does not outlive the alternate screen: leaving it takes the alternate's.
    normal: { ...describeBuffer(term, term.buffer.normal), ...(active === "alternate" ? { cursor: [] } : {}) },
    // (xterm.js 6 keeps lines above an alternate screen that was resized before it was first used.)
    alternate: active === "alternate" ? describeBuffer(term, term.buffer.alternate, true) : undefined,
    modes: term.modes,
    cursorHidden: core.coreService.isCursorHidden,
    cursorStyle: [core.coreService.decPrivateModes.cursorStyle, core.coreService.decPrivateModes.cursorBlink],
    mouseEncoding: core.coreMouseService.activeEncoding,
    options: [core.optionsService.rawOptions.convertEol, core.optionsService.rawOptions.cursorBlink],
    title: [core._inputHandler._windowTitle, core._inputHandler._iconName],
  };
}

/** Whether the cursor waits to wrap on a line that ends in an empty cell and is not all erased alike. */
export function isPendingOnEmpty(term: Term, buffer: xtermHeadless.IBuffer): boolean {
  const line = buffer.getLine(buffer.baseY + buffer.cursorY);
  const last = line?.getCell(term.cols - 1) as (xtermHeadless.IBufferCell & InternalCell) | undefined;
  if (buffer.cursorX < term.cols || !line || !last || last.getChars() || last.getWidth() !== 1) return false;
  if (last.fg >>> 0 !== 0 || (last.bg & 0xfc000000) !== 0) return true;
  for (let x = 0; x < term.cols; x++) {
    const cell = line.getCell(x) as xtermHeadless.IBufferCell & InternalCell;
    if (!(cell.bg & 0x20000000) && describeCell(term, cell) !== describeCell(term, last)) return true;
  }
  return false;
}
