import type { IBufferLine, Terminal } from "@xterm/headless";
import {
  Attr,
  type BufferState,
  type Cell,
  createCellReader,
  type EmulatorState,
  type Pen,
  readEmulatorState,
  type SavedCursor,
} from "./emulator-state.js";

const csi = "\x1b[";
const st = "\x1b\\";
/** Two columns wide in every Unicode version xterm.js knows: written to wrap a line or empty a cell. */
const wideFiller = "\u4e00";
const narrowFiller = "x";

/**
 * Brings any xterm-compatible terminal to the state of a fresh one, so that a snapshot is also right when
 * written to a terminal that is in use (a client resynchronised after a lag, `devex shell` reattaching):
 * the normal screen, a soft reset (pen, margins, charsets, modes; autowrap back on, which a VT220's DECSTR
 * turns off), mouse and focus reports and bracketed paste off, no open link, an empty screen.
 * On a fresh terminal it changes nothing.
 */
const preamble = `${csi}?1047l${csi}!p${csi}?7h${csi}?9;1000;1002;1003;1004;1006;1016;2004l\x1b]8;;${st}${csi}H${csi}2J`;

const defaultPen: Pen = { fg: 0, bg: 0, underlineStyle: 0, underlineColor: 0, urlId: 0, link: undefined };

/**
 * Bytes that, written to a fresh terminal of the same size (and scrollback), reproduce the state of
 * `term` exactly: every cell of the normal buffer with its scrollback and, when it is active, of the
 * alternate one (characters, widths, colours, attributes, underline styles and colours, links,
 * protection, wrapped lines), the cursor (including the pending wrap after the last column), scroll
 * margins, saved cursors, tab stops, modes, the pen and charsets for what is written next, and the
 * title. xterm.js's serialize add-on does not (see the tests), so this writes each line itself, making
 * each state the way xterm.js makes it.
 *
 * What no sequence can make is approximated: cells only resizing leaves (a wide character cut by the
 * last column is an empty cell, one whose right half became an empty cell gets it back, a right half
 * alone is an empty cell); cells a combining mark widened where xterm.js joins one wrongly (after a
 * dropped wide character or a resize) are as wide as their text; a line whose every cell is an empty
 * one with attributes beyond a background keeps only the background in its first; a wrap pending on
 * the alternate screen at the end of a line that ends in an empty cell but is not all erased alike is
 * a cursor in the last column; the charset in use, where DECRC set it apart from the one invoked to
 * another than the saved one; the pen's underline style and link where DECRC left them without the
 * flags that show them; a link without an id is one link per run of its cells, and a link open in the
 * pen is opened again on the screen that is active.
 */
export function serializeScreen(term: Terminal): string {
  return new SnapshotWriter(term, readEmulatorState(term)).write();
}

type Kind = "text" | "wide" | "zero" | "spacer" | "blank" | "erased" | "nulled";

/**
 * What a cell is, for writing it: text of its width (or `zero` for a lone combining character), the
 * `spacer` right of a wide character, or empty: `blank` as in a fresh line, `erased` (the background an
 * erase leaves), or `nulled`, with other attributes, as overwriting half of a wide character leaves it.
 */
function kindOf(cell: Cell): Kind {
  if (cell.chars) return cell.width === 2 ? "wide" : cell.width === 1 ? "text" : "zero";
  if (cell.width === 0) return "spacer";
  if (cell.fg !== 0 || (cell.bg & Attr.BgFlags) !== 0) return "nulled";
  return cell.bg === 0 ? "blank" : "erased";
}

/** The background colour an erase leaves (it takes only the colour from the pen). */
function eraseColor(pen: Pen): number {
  return pen.bg & (Attr.ColorModeMask | Attr.ColorMask);
}

/** The underline style a pen or cell shows (single when it has no extended attributes). */
function underlineStyle(pen: Pen): number {
  if (!(pen.fg & Attr.Underline)) return 0;
  return pen.bg & Attr.HasExtended ? pen.underlineStyle : 1;
}

function pushColor(params: (number | string)[], word: number, base: number, bright: number, extended: number): void {
  const value = word & Attr.ColorMask;
  switch (word & Attr.ColorModeMask) {
    case Attr.ColorModePalette16:
      params.push(value < 8 ? base + value : bright + (value & 7));
      break;
    case Attr.ColorModePalette256:
      params.push(extended, 5, value & 0xff);
      break;
    case Attr.ColorModeRgb:
      params.push(extended, 2, (value >> 16) & 0xff, (value >> 8) & 0xff, value & 0xff);
      break;
  }
}

/** SGR (from a reset) and DECSCA that give the pen `pen`; the underline colour only when asked. */
function penSequence(pen: Pen, withUnderlineColor: boolean): string {
  const params: (number | string)[] = [0];
  const { fg, bg } = pen;
  if (fg & Attr.Bold) params.push(1);
  if (bg & Attr.Dim) params.push(2);
  if (bg & Attr.Italic) params.push(3);
  const style = underlineStyle(pen);
  if (style) params.push(style === 1 ? 4 : `4:${style}`);
  if (fg & Attr.Blink) params.push(5);
  if (fg & Attr.Inverse) params.push(7);
  if (fg & Attr.Invisible) params.push(8);
  if (fg & Attr.Strikethrough) params.push(9);
  if (bg & Attr.Overline) params.push(53);
  pushColor(params, fg, 30, 90, 38);
  pushColor(params, bg, 40, 100, 48);
  if (withUnderlineColor) pushColor(params, pen.underlineColor, 58, 58, 58);
  return `${csi}${params.join(";")}m${bg & Attr.Protected ? `${csi}1"q` : ""}`;
}

/**
 * A wide character in the last column, which only narrowing the terminal leaves (no sequence can write
 * one there), becomes an empty cell with its attributes.
 */
function cutWide(lastCell: Cell): Cell {
  if (lastCell.width === 2) {
    lastCell.chars = "";
    lastCell.width = 1;
  }
  return lastCell;
}

function isDefaultSaved(saved: SavedCursor): boolean {
  return saved.x === 0 && saved.y === 0 && saved.fg === 0 && saved.bg === 0 && saved.charset === "B";
}

class SnapshotWriter {
  private out = "";
  /** The pen of the terminal written to, as far as this writer has set it. */
  private pen: Pen = defaultPen;
  /** The cursor column (`cols` when a wrap is pending). */
  private x = 0;
  /** Whether text was the last thing written, so that a combining character would join it. */
  private joinable = false;
  private writingAlternate = false;
  private readonly cols: number;
  private readonly rows: number;
  private readonly cells: Cell[];
  /** Cells of the current line overwritten by a filler that must be erased again. */
  private readonly dirty: Uint8Array;
  private readonly readCell: (line: IBufferLine, x: number, into: Cell) => Cell;

  constructor(
    term: Terminal,
    private readonly state: EmulatorState,
  ) {
    this.cols = state.cols;
    this.rows = state.rows;
    this.cells = Array.from({ length: this.cols }, () => ({ ...defaultPen, chars: "", width: 1 }));
    this.dirty = new Uint8Array(this.cols);
    this.readCell = createCellReader(term);
  }

  write(): string {
    const { state } = this;
    this.out = preamble;
    this.writeLines(state.normal, state.scrollback);
    if (state.alternateActive) {
      this.finishBuffer(state.normal, false);
      this.setPen(defaultPen);
      // Margins are global in some terminals: set the alternate screen's own.
      this.emit(`${csi}?1047h${csi}r${csi}H${csi}2J`);
      this.x = 0;
      this.writingAlternate = true;
      this.writeLines(state.alternate, 0);
      this.finishBuffer(state.alternate, true);
    } else {
      // The alternate screen's saved cursor outlives it: set it there and come back.
      if (!isDefaultSaved(state.alternate.saved)) {
        this.setPen(defaultPen);
        this.emit(`${csi}?1047h`);
        this.saveCursor(state.alternate.saved);
        this.setPen(defaultPen);
        this.emit(`${csi}?1047l`);
      }
      this.finishBuffer(state.normal, true);
    }
    this.writeCharsets();
    this.writeModes();
    this.setPen(state.pen, true);
    return this.out;
  }

  private emit(data: string): void {
    this.out += data;
    this.joinable = false;
  }

  /** Writes text of `width` columns at the cursor (a lone combining character still moves one column). */
  private text(chars: string, width: number): void {
    this.out += chars;
    this.x += Math.max(width, 1);
    this.joinable = true;
  }

  /** Moves to column `x` of the current line; `separate` also when text written before would join. */
  private moveTo(x: number, separate = false): void {
    if (this.x === x && !(separate && this.joinable)) return;
    this.emit(`${csi}${x + 1}G`);
    this.x = x;
  }

  private setPen(target: Pen, withUnderlineColor = false): void {
    const pen = this.pen;
    const extendedMatters = withUnderlineColor || (target.bg & Attr.HasExtended) !== 0;
    if (
      pen.fg !== target.fg ||
      (pen.bg | Attr.HasExtended) !== (target.bg | Attr.HasExtended) ||
      underlineStyle(pen) !== underlineStyle(target) ||
      (extendedMatters && pen.underlineColor !== target.underlineColor)
    ) {
      this.emit(penSequence(target, extendedMatters));
      this.pen = { ...target, underlineColor: extendedMatters ? target.underlineColor : 0, urlId: pen.urlId };
    }
    if (this.pen.urlId !== target.urlId) {
      const link = target.link;
      this.emit(link ? `\x1b]8;${link.id ? `id=${link.id}` : ""};${link.uri}${st}` : `\x1b]8;;${st}`);
      this.pen = { ...this.pen, urlId: target.urlId, link };
    }
  }

  /** Sets the erase colour (all that an erase takes from the pen). */
  private setEraseColor(color: number): void {
    if (eraseColor(this.pen) !== color) this.setPen({ ...defaultPen, bg: color });
  }

  /** Erases `count` cells from column `x` to `color`. */
  private erase(x: number, count: number, color: number): void {
    this.moveTo(x);
    this.setEraseColor(color);
    this.emit(count === 1 ? `${csi}X` : `${csi}${count}X`);
    this.dirty.fill(0, x, x + count);
  }

  /** Writes every line of a buffer from the top of a blank screen, scrolling the first ones into the scrollback. */
  private writeLines(buffer: BufferState, scrollback: number): void {
    const count = buffer.lineCount;
    if (count === 0) return;
    this.dirty.fill(0);
    // A first line that continues a wrapped one needs a line before it, which must then go: it scrolls
    // away on the alternate screen and from a full scrollback; otherwise ED 3 clears it as soon as it
    // has scrolled into the scrollback, where it is alone then.
    const before = buffer.line(0).isWrapped;
    const clearAt = before && count < scrollback + this.rows ? this.rows - 1 : -1;
    if (before) {
      this.moveTo(this.cols - 1);
      this.text(narrowFiller, 1);
      this.wrapPending();
    }
    for (let y = 0; y < count; y++) {
      const line = buffer.line(y);
      if (y > 0 && !line.isWrapped) this.newLine();
      if (y === clearAt) this.emit(`${csi}3J`);
      this.writeLine(line, y + 1 < count && buffer.line(y + 1).isWrapped);
    }
  }

  private newLine(): void {
    // The line scrolled in takes the erase colour.
    this.setEraseColor(0);
    this.emit("\r\n");
    this.x = 0;
    this.dirty.fill(0);
  }

  /** With a wrap pending after the last column, continues on the next line. */
  private wrapPending(): void {
    this.setPen(defaultPen);
    this.text(" ", 1);
    this.emit("\r");
    this.x = 0;
    this.dirty.fill(0);
    this.dirty[0] = 1;
  }

  /**
   * Writes one line, which is blank with the cursor at its start. Text is written in place; empty cells
   * with a background are erased to it; an empty cell with other attributes (`nulled`) is made the way
   * xterm.js makes one, by overwriting half of a wide character with the pen set to those attributes.
   * When the next line is wrapped, the line ends by wrapping into it.
   */
  private writeLine(line: IBufferLine, nextWrapped: boolean): void {
    const { cols, cells, dirty } = this;
    for (let x = 0; x < cols; x++) this.readCell(line, x, cells[x] as Cell);
    const cell = (x: number) => cells[x] as Cell;
    const last = cols - 1;
    cutWide(cell(last));
    const lastKind = kindOf(cell(last));
    // A wide character before the last column whose right half something else took (see below).
    const wideCut = cell(last - 1).width === 2 && lastKind !== "spacer";
    // An empty last cell on a wrapped line is what wrapping a wide character leaves: do just that.
    const wrapWide =
      nextWrapped && !wideCut && (lastKind === "blank" || lastKind === "erased" || lastKind === "nulled");
    const end = wrapWide || wideCut ? last - 1 : last;

    // Trailing nulled cells, right to left: each by a wide character just left of it whose first half
    // is then overwritten, which empties the second half with the pen's attributes.
    let start = end + 1;
    while (start - 1 >= 1 && kindOf(cell(start - 1)) === "nulled") start--;
    for (let x = end; x >= start; x--) {
      this.moveTo(x - 1);
      this.text(wideFiller, 2);
      this.moveTo(x - 1);
      this.setPen(cell(x));
      this.text(narrowFiller, 1);
      dirty[x - 1] = 1;
    }

    for (let x = 0; x < start; ) {
      const current = cell(x);
      switch (kindOf(current)) {
        case "wide": {
          this.moveTo(x);
          this.setPen(current);
          const next = cell(x + 1);
          if (x + 2 === cols && next.width !== 0) {
            // Without autowrap, what comes after the last column takes the right half of a wide
            // character there and leaves the wide one whole: text overwrites it, and a wide character,
            // which does not fit, empties it with the pen.
            this.emit(`${csi}?7l`);
            this.text(current.chars, 2);
            this.setPen(next);
            this.out += next.chars || wideFiller;
            this.emit(`${csi}?7h`);
            if (!next.chars) this.x = cols - 1;
          } else this.text(current.chars, 2);
          dirty[x] = 0;
          dirty[x + 1] = 0;
          x += 2;
          break;
        }
        case "text":
        case "zero":
          this.moveTo(x, current.width === 0);
          this.setPen(current);
          this.text(current.chars, current.width);
          dirty[x] = 0;
          x++;
          break;
        case "spacer":
        // The right half of a wide character no longer there (ICH moved it away): empty it.
        case "blank": {
          let to = x;
          while (to < start && dirty[to] && (kindOf(cell(to)) === "blank" || cell(to).width === 0)) to++;
          if (to > x) this.erase(x, to - x, 0);
          x = Math.max(to, x + 1);
          break;
        }
        case "erased": {
          let to = x + 1;
          while (to < start && kindOf(cell(to)) === "erased" && cell(to).bg === current.bg) to++;
          this.erase(x, to - x, current.bg);
          x = to;
          break;
        }
        case "nulled":
          if (x + 1 < start) {
            // A wide character here, then text over its second half empties the first with the pen.
            this.moveTo(x);
            this.text(wideFiller, 2);
            this.moveTo(x + 1);
            this.setPen(current);
            this.text(narrowFiller, 1);
            dirty[x + 1] = 1;
          } else {
            // The whole line is nulled: the first cell keeps only its background.
            this.erase(x, 1, eraseColor(current));
          }
          x++;
          break;
      }
    }

    if (!nextWrapped) return;
    if (wideCut && this.x !== cols && !this.writingAlternate) {
      // Leaving the alternate screen leaves the cursor where the alternate one's was: after the last column.
      this.emit(`${csi}?1047h`);
      this.text(narrowFiller, 1);
      this.emit(`${csi}?1047l`);
    }
    if (wrapWide || this.x !== cols) {
      // A wide character in the last column wraps and leaves the cell empty with the pen's attributes.
      this.moveTo(last);
      this.setPen(lastKind === "blank" || lastKind === "erased" || lastKind === "nulled" ? cell(last) : defaultPen);
      this.text(wideFiller, 2);
      // The line wrapped into holds the filler (and the pen's background, if it scrolled in): blank it.
      this.setPen(defaultPen);
      this.emit(`\r${csi}${cols}X`);
      this.x = 0;
      this.dirty.fill(0);
    } else {
      this.wrapPending();
    }
  }

  /** Tab stops, scroll margins, the saved cursor and, for the active buffer, the cursor. */
  private finishBuffer(buffer: BufferState, active: boolean): void {
    const { cols, rows } = this;
    const stops = buffer.tabStops;
    if (stops.length !== Math.ceil(cols / 8) || stops.some((x, i) => x !== i * 8)) {
      this.emit(`${csi}3g`);
      for (const x of stops) {
        this.moveTo(x);
        this.emit("\x1bH");
      }
    }
    if (buffer.scrollTop !== 0 || buffer.scrollBottom !== rows - 1) {
      this.emit(`${csi}${buffer.scrollTop + 1};${buffer.scrollBottom + 1}r`);
      this.x = 0;
    }
    if (!isDefaultSaved(buffer.saved)) this.saveCursor(buffer.saved);
    if (!active) return;
    const origin = this.state.modes.origin;
    if (origin) this.emit(`${csi}?6h`);
    this.placeCursor(buffer, origin ? buffer.scrollTop : 0);
  }

  /** DECSC of a given position, pen and charset. */
  private saveCursor(saved: SavedCursor): void {
    this.cursorTo(saved.y, saved.x, 0);
    // DECSC keeps the two words only: DECRC takes the underline style (any) from the pen it restores into.
    this.setPen({ ...defaultPen, fg: saved.fg, bg: saved.bg, underlineStyle: 1 });
    // Words that say "extended" without an underline were saved with a link open: open one.
    const link = saved.bg & Attr.HasExtended && !(saved.fg & Attr.Underline);
    if (link) this.emit(`\x1b]8;;about:blank${st}`);
    if (saved.charset !== "B") this.emit(`\x1b(${saved.charset}`);
    this.emit("\x1b7");
    if (saved.charset !== "B") this.emit("\x1b(B");
    if (link) this.emit(`\x1b]8;;${st}`);
  }

  private cursorTo(y: number, x: number, top: number): void {
    this.emit(`${csi}${y - top + 1};${x + 1}H`);
    this.x = x;
  }

  /** Places the cursor; after the last column, by writing the last cell again, which leaves the wrap pending. */
  private placeCursor(buffer: BufferState, top: number): void {
    const { cols } = this;
    const y = buffer.cursorY;
    if (buffer.cursorX < cols) {
      this.cursorTo(y, buffer.cursorX, top);
      return;
    }
    this.placePendingWrap(buffer, top);
    // A combining character after the last column, where nothing precedes it to join (an escape
    // sequence came between), goes one column further in xterm.js: so it does here.
    for (let x = cols; x < buffer.cursorX; x++) this.out += "\x1b\\\u0301";
  }

  private placePendingWrap(buffer: BufferState, top: number): void {
    const { cols } = this;
    const y = buffer.cursorY;
    const line = buffer.line(buffer.baseY + y);
    const last = cutWide(this.readCell(line, cols - 1, this.cells[0] as Cell));
    switch (kindOf(last)) {
      case "text":
      case "zero": {
        const before = this.readCell(line, cols - 2, this.cells[1] as Cell);
        if (before.width === 2) {
          // The right half of a wide character overwritten (see writeLine): write both the same way.
          this.cursorTo(y, cols - 2, top);
          this.setPen(before);
          this.emit(`${csi}?7l`);
          this.text(before.chars, 2);
        } else this.cursorTo(y, cols - 1, top);
        this.setPen(last);
        this.text(last.chars, last.width);
        if (before.width === 2) this.emit(`${csi}?7h`);
        return;
      }
      case "spacer": {
        const wide = this.readCell(line, cols - 2, this.cells[0] as Cell);
        this.cursorTo(y, cols - 2, top);
        this.setPen(wide);
        this.text(wide.chars, 2);
        return;
      }
      default: {
        if (!this.state.alternateActive) {
          // Leaving the alternate screen leaves the normal one's cursor where the alternate one's was.
          this.emit(`${csi}?1047h`);
          this.cursorTo(y, cols - 1, 0);
          this.text(narrowFiller, 1);
          this.emit(`${csi}?1047l`);
          return;
        }
        // An erase after the last column leaves the wrap pending: EL 1 (selective, sparing protected
        // cells as DECSEL did) erases the filler written to get there.
        const color = eraseColor(last);
        let uniform = true;
        for (let x = 0; x < cols && uniform; x++) {
          const cell = this.readCell(line, x, this.cells[1] as Cell);
          const kind = kindOf(cell);
          uniform = cell.bg & Attr.Protected ? true : (kind === "blank" || kind === "erased") && cell.bg === color;
        }
        this.cursorTo(y, cols - 1, top);
        if (!uniform) return;
        this.setPen(defaultPen);
        this.text(narrowFiller, 1);
        this.setEraseColor(color);
        this.emit(`${csi}?1K`);
      }
    }
  }

  private writeModes(): void {
    const { modes } = this.state;
    const set: number[] = [];
    if (modes.applicationCursorKeys) set.push(1);
    if (modes.cursorBlink) set.push(12);
    if (modes.reverseWraparound) set.push(45);
    if (modes.applicationKeypad) set.push(66);
    const mouse = { NONE: 0, X10: 9, VT200: 1000, DRAG: 1002, ANY: 1003 }[modes.mouseProtocol];
    if (mouse) set.push(mouse);
    if (modes.sendFocus) set.push(1004);
    const encoding = { DEFAULT: 0, SGR: 1006, SGR_PIXELS: 1016 }[modes.mouseEncoding];
    if (encoding) set.push(encoding);
    if (modes.bracketedPaste) set.push(2004);
    if (set.length > 0) this.emit(`${csi}?${set.join(";")}h`);
    if (!modes.wraparound) this.emit(`${csi}?7l`);
    if (modes.cursorHidden) this.emit(`${csi}?25l`);
    if (modes.insert) this.emit(`${csi}4h`);
    if (modes.newline) this.emit(`${csi}20h`);
    if (modes.cursorStyle) {
      const shape = { block: 1, underline: 3, bar: 5 }[modes.cursorStyle];
      this.emit(`${csi}${modes.cursorStyleBlink ? shape : shape + 1} q`);
    }
    const { title, iconName } = this.state;
    if (title && title === iconName) this.emit(`\x1b]0;${title}${st}`);
    else {
      if (iconName) this.emit(`\x1b]1;${iconName}${st}`);
      if (title) this.emit(`\x1b]2;${title}${st}`);
    }
    // Last: a terminal holds its rendering until the program ends the synchronized update.
    if (modes.synchronizedOutput) this.emit(`${csi}?2026h`);
  }

  /** G0-G3 and the one invoked; then the one in use, where DECRC set it apart (before any insert mode). */
  private writeCharsets(): void {
    const { charsets, glevel, charset } = this.state;
    charsets.forEach((designator, g) => {
      if (designator !== "B") this.emit(`\x1b${"()*+"[g]}${designator}`);
    });
    if (glevel) this.emit(["", "\x0e", "\x1bn", "\x1bo"][glevel] ?? "");
    const buffer = this.state.alternateActive ? this.state.alternate : this.state.normal;
    // Only DECRC sets the charset in use apart from the one invoked, to the one it saved: do the same
    // and place the cursor again (writing the last cell again takes US ASCII, for a pending wrap).
    if (charset !== charsets[glevel] && charset === buffer.saved.charset) {
      this.emit("\x1b8");
      // DECRC set the pen's two words too: whatever the next one is, write it in full.
      this.pen = { ...this.pen, fg: -1 };
      if (buffer.cursorX < this.cols || charset === "B") {
        this.placeCursor(buffer, this.state.modes.origin ? buffer.scrollTop : 0);
      } else this.cursorTo(buffer.cursorY, this.cols - 1, this.state.modes.origin ? buffer.scrollTop : 0);
    }
  }
}
