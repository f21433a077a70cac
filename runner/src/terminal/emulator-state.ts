import type { IBufferCell, IBufferLine, Terminal } from "@xterm/headless";

// Everything a screen snapshot reads from @xterm/headless that its public API does not show (the
// pen, scroll margins, saved cursors, charsets, tab stops, a few modes) is read here, in one place:
// the fields are private to xterm.js and may move in a new version, which the snapshot tests catch.

/** Bits of xterm.js's packed cell attributes (`common/buffer/Constants.ts`), in unsigned words. */
export const Attr = {
  ColorMask: 0xffffff,
  ColorModeMask: 0x3000000,
  ColorModePalette16: 0x1000000,
  ColorModePalette256: 0x2000000,
  ColorModeRgb: 0x3000000,
  // The foreground word's flags.
  Inverse: 0x4000000,
  Bold: 0x8000000,
  Underline: 0x10000000,
  Blink: 0x20000000,
  Invisible: 0x40000000,
  Strikethrough: 0x80000000,
  // The background word's flags.
  Italic: 0x4000000,
  Dim: 0x8000000,
  HasExtended: 0x10000000,
  Protected: 0x20000000,
  Overline: 0x40000000,
  BgFlags: 0xfc000000,
} as const;

/** An OSC 8 hyperlink. */
export interface Link {
  id: string | undefined;
  uri: string;
}

/** Text attributes: xterm.js's two packed words plus the extended ones (underline style and colour, link). */
export interface Pen {
  fg: number;
  bg: number;
  /** 0 none, 1 single, 2 double, 3 curly, 4 dotted, 5 dashed. */
  underlineStyle: number;
  /** Packed like a colour word: mode and value; 0 is the default (the text colour). */
  underlineColor: number;
  /** The link's id in the emulator (0: none) and what it points at. */
  urlId: number;
  link: Link | undefined;
}

/** One cell of a line. */
export interface Cell extends Pen {
  /** The text, with any combining characters; "" for an empty cell. */
  chars: string;
  /** 1, 2 for a wide character, 0 for the cell right of a wide character (or a lone combining character). */
  width: number;
}

/** What DECSC saved. */
export interface SavedCursor {
  x: number;
  /** Row on the screen: DECRC restores it as this row (0 when the saved row has scrolled off). */
  y: number;
  /** DECSC saves only the two packed words of the pen. */
  fg: number;
  bg: number;
  /** Designator of the charset saved (`B` is US ASCII, `0` DEC line drawing...). */
  charset: string;
}

/** A screen buffer: the normal one (with its scrollback) or the alternate one. */
export interface BufferState {
  /** Every line, scrollback first. */
  lineCount: number;
  line(y: number): IBufferLine;
  /** Where the screen starts in the lines. */
  baseY: number;
  /** The cursor on the screen; cursorX is `cols` after a character in the last column (pending wrap). */
  cursorX: number;
  cursorY: number;
  /** Scroll margins, rows on the screen, inclusive. */
  scrollTop: number;
  scrollBottom: number;
  saved: SavedCursor;
  /** Tab stops, in column order. */
  tabStops: number[];
}

/** Modes that change how the terminal behaves or what it sends. */
export interface Modes {
  insert: boolean;
  /** LNM: LF also returns the carriage. */
  newline: boolean;
  applicationCursorKeys: boolean;
  applicationKeypad: boolean;
  bracketedPaste: boolean;
  origin: boolean;
  wraparound: boolean;
  reverseWraparound: boolean;
  sendFocus: boolean;
  synchronizedOutput: boolean;
  cursorHidden: boolean;
  /** The option ?12 sets. */
  cursorBlink: boolean;
  /** DECSCUSR's choice, unset when the terminal's own default applies. */
  cursorStyle: "block" | "underline" | "bar" | undefined;
  cursorStyleBlink: boolean | undefined;
  mouseProtocol: "NONE" | "X10" | "VT200" | "DRAG" | "ANY";
  mouseEncoding: "DEFAULT" | "SGR" | "SGR_PIXELS";
}

/** The whole state a snapshot reproduces. */
export interface EmulatorState {
  cols: number;
  rows: number;
  /** The scrollback limit the emulator was created with. */
  scrollback: number;
  normal: BufferState;
  alternate: BufferState;
  alternateActive: boolean;
  pen: Pen;
  /** Designators of G0-G3, the one invoked into GL, and the one in use (which DECRC can set apart from GL). */
  charsets: string[];
  glevel: number;
  charset: string;
  modes: Modes;
  title: string;
  iconName: string;
}

interface InternalAttributes {
  fg: number;
  bg: number;
  /** `_ext` holds the underline style as set (the `underlineStyle` getter says dashed for any link). */
  extended: { _ext: number; underlineColor: number; urlId: number };
}

interface InternalBuffer {
  x: number;
  y: number;
  ybase: number;
  scrollTop: number;
  scrollBottom: number;
  savedX: number;
  savedY: number;
  savedCurAttrData: { fg: number; bg: number };
  savedCharset: object | undefined;
  tabs: Record<number, boolean | undefined>;
}

/** The private parts of @xterm/headless 6 read here. */
interface Core {
  _bufferService: { buffers: { normal: InternalBuffer; alt: InternalBuffer } };
  _inputHandler: {
    _curAttrData: InternalAttributes;
    _windowTitle: string;
    _iconName: string;
    selectCharset(collectAndFlag: string): boolean;
  };
  _charsetService: { charset: object | undefined; glevel: number; _charsets: (object | undefined)[] };
  _oscLinkService: { getLinkData(urlId: number): { id?: string; uri: string } | undefined };
  coreService: {
    isCursorHidden: boolean;
    modes: { insertMode: boolean };
    decPrivateModes: {
      cursorStyle: Modes["cursorStyle"];
      cursorBlink: boolean | undefined;
    };
  };
  coreMouseService: { activeProtocol: Modes["mouseProtocol"]; activeEncoding: Modes["mouseEncoding"] };
  optionsService: { rawOptions: { convertEol: boolean; cursorBlink: boolean; scrollback: number } };
}

/**
 * A packed colour word with only the bits its colour mode uses: xterm.js leaves bits of an earlier RGB
 * colour in a palette one, which no sequence reproduces and nothing reads.
 */
function cleanColor(word: number): number {
  const mode = word & Attr.ColorModeMask;
  const used = mode === Attr.ColorModeRgb ? Attr.ColorMask : mode === 0 ? 0 : 0xff;
  return ((word & ~Attr.ColorMask) | (word & used)) >>> 0;
}

function core(term: Terminal): Core {
  return (term as unknown as { _core: Core })._core;
}

/** Designators xterm.js knows, in the order a designator is chosen for a charset several share. */
const designators = "B0A4C5RQKYE6ZH7=";
const charsetNames = new WeakMap<typeof Terminal, Map<object | undefined, string>>();

/** Maps xterm.js's charset tables back to their designators, by designating each in a scratch terminal. */
function charsetDesignators(term: Terminal): Map<object | undefined, string> {
  const Class = term.constructor as typeof Terminal;
  let names = charsetNames.get(Class);
  if (!names) {
    names = new Map([[undefined, "B"]]);
    const scratch = new Class({ cols: 2, rows: 1, allowProposedApi: true });
    const scratchCore = core(scratch);
    for (const flag of designators) {
      scratchCore._inputHandler.selectCharset(`(${flag}`);
      const table = scratchCore._charsetService._charsets[0];
      if (!names.has(table)) names.set(table, flag);
    }
    scratch.dispose();
    charsetNames.set(Class, names);
  }
  return names;
}

/** Reads the state of a terminal, for a snapshot. */
export function readEmulatorState(term: Terminal): EmulatorState {
  const c = core(term);
  const names = charsetDesignators(term);
  const designator = (table: object | undefined) => names.get(table) ?? "B";
  const { cols, rows } = term;
  const buffers = c._bufferService.buffers;
  const links = c._oscLinkService;
  const readBuffer = (buffer: InternalBuffer, api: Terminal["buffer"]["normal"]): BufferState => ({
    lineCount: api.length,
    line: (y) => api.getLine(y) as IBufferLine,
    baseY: buffer.ybase,
    cursorX: buffer.x,
    cursorY: buffer.y,
    scrollTop: buffer.scrollTop,
    scrollBottom: buffer.scrollBottom,
    saved: {
      x: Math.min(buffer.savedX, cols - 1),
      y: Math.min(Math.max(buffer.savedY - buffer.ybase, 0), rows - 1),
      fg: cleanColor(buffer.savedCurAttrData.fg),
      bg: cleanColor(buffer.savedCurAttrData.bg),
      charset: designator(buffer.savedCharset),
    },
    tabStops: Object.keys(buffer.tabs)
      .map(Number)
      .filter((x) => buffer.tabs[x] && x < cols)
      .sort((a, b) => a - b),
  });
  const attrs = c._inputHandler._curAttrData;
  const charsets = c._charsetService;
  const { decPrivateModes } = c.coreService;
  const publicModes = term.modes;
  return {
    cols,
    rows,
    scrollback: c.optionsService.rawOptions.scrollback,
    normal: readBuffer(buffers.normal, term.buffer.normal),
    alternate: readBuffer(buffers.alt, term.buffer.alternate),
    alternateActive: term.buffer.active.type === "alternate",
    pen: {
      fg: cleanColor(attrs.fg),
      bg: cleanColor(attrs.bg),
      ...extendedOf(links, attrs.extended),
      // Text takes the pen's link only while its background word says it has extended attributes.
      ...(attrs.bg & Attr.HasExtended ? {} : { urlId: 0, link: undefined }),
    },
    charsets: [0, 1, 2, 3].map((g) => designator(charsets._charsets[g])),
    glevel: charsets.glevel,
    charset: designator(charsets.charset),
    modes: {
      insert: c.coreService.modes.insertMode,
      newline: c.optionsService.rawOptions.convertEol,
      applicationCursorKeys: publicModes.applicationCursorKeysMode,
      applicationKeypad: publicModes.applicationKeypadMode,
      bracketedPaste: publicModes.bracketedPasteMode,
      origin: publicModes.originMode,
      wraparound: publicModes.wraparoundMode,
      reverseWraparound: publicModes.reverseWraparoundMode,
      sendFocus: publicModes.sendFocusMode,
      synchronizedOutput: publicModes.synchronizedOutputMode,
      cursorHidden: c.coreService.isCursorHidden,
      cursorBlink: c.optionsService.rawOptions.cursorBlink,
      cursorStyle: decPrivateModes.cursorStyle,
      cursorStyleBlink: decPrivateModes.cursorBlink,
      mouseProtocol: c.coreMouseService.activeProtocol,
      mouseEncoding: c.coreMouseService.activeEncoding,
    },
    title: c._inputHandler._windowTitle,
    iconName: c._inputHandler._iconName,
  };
}

function linkOf(links: Core["_oscLinkService"], urlId: number): Link | undefined {
  if (!urlId) return undefined;
  const data = links.getLinkData(urlId);
  return data ? { id: data.id, uri: data.uri } : undefined;
}

/** The extended attributes of a pen or cell; a link whose lines have all gone counts as none. */
function extendedOf(links: Core["_oscLinkService"], extended: InternalAttributes["extended"] | undefined) {
  const link = linkOf(links, extended?.urlId ?? 0);
  return {
    underlineStyle: ((extended?._ext ?? 0) >> 26) & 7,
    underlineColor: cleanColor(extended?.underlineColor ?? 0),
    urlId: link ? (extended?.urlId ?? 0) : 0,
    link,
  };
}

/** Reads cells of one terminal into a reusable {@link Cell}. */
export function createCellReader(term: Terminal): (line: IBufferLine, x: number, into: Cell) => Cell {
  const links = core(term)._oscLinkService;
  let scratch: IBufferCell | undefined;
  return (line, x, into) => {
    scratch = line.getCell(x, scratch);
    const cell = scratch as unknown as InternalAttributes & IBufferCell;
    into.chars = cell.getChars();
    into.width = cell.getWidth();
    into.fg = cleanColor(cell.fg);
    into.bg = cleanColor(cell.bg);
    // The extended attributes count only where the background word says the cell has them.
    if (cell.bg & Attr.HasExtended) Object.assign(into, extendedOf(links, cell.extended));
    else {
      into.underlineStyle = 0;
      into.underlineColor = 0;
      into.urlId = 0;
      into.link = undefined;
    }
    return into;
  };
}
