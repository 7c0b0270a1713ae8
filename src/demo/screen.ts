/**
 * The terminal: the live view on the alternate screen (so the summary lands
 * on the normal one, below the command), single-key input, and plain lines
 * when stdout is not a terminal. Whatever happens, the terminal is given back
 * as it was found.
 */

const csi = '\x1b[';

export class Screen {
  readonly tty: boolean;
  private live = false;
  /** a progress line without its newline yet: the next line() ends it first */
  private lineOpen = false;
  private rawInput = false;
  private onData: ((chunk: Buffer) => void) | null = null;
  private readonly restoreOnExit = () => this.leaveLive();

  constructor(
    private readonly out: NodeJS.WriteStream = process.stdout,
    private readonly input: NodeJS.ReadStream = process.stdin,
  ) {
    this.tty = out.isTTY === true;
  }

  get width(): number {
    return Math.max(60, this.out.columns ?? 100);
  }

  get height(): number {
    return Math.max(20, this.out.rows ?? 40);
  }

  /** Listens for single key presses (k, q, Ctrl-C) when stdin is a terminal. */
  listenForKeys(onKey: (key: string) => void): void {
    if (!this.input.isTTY || this.onData !== null) return;
    this.input.setRawMode(true);
    this.rawInput = true;
    this.onData = (chunk: Buffer) => {
      for (const ch of chunk.toString('utf8')) onKey(ch === '\u0003' ? 'q' : ch.toLowerCase());
    };
    this.input.on('data', this.onData);
    this.input.resume();
    process.once('exit', this.restoreOnExit);
  }

  stopListening(): void {
    if (this.onData !== null) this.input.off('data', this.onData);
    this.onData = null;
    if (this.rawInput) this.input.setRawMode(false);
    this.rawInput = false;
    // a paused stdin lets the process end
    this.input.pause();
  }

  enterLive(): void {
    if (!this.tty || this.live) return;
    this.endLine();
    this.live = true;
    // alternate screen, cursor hidden
    this.out.write(`${csi}?1049h${csi}?25l`);
    process.once('exit', this.restoreOnExit);
  }

  /** Redraws in place: home, each line cleared to its end, the rest of the screen cleared. */
  draw(lines: string[]): void {
    if (!this.live) return;
    const height = this.height;
    const body = lines.slice(0, height).map((l) => `${l}${csi}K`).join('\r\n');
    this.out.write(`${csi}H${body}${csi}J`);
  }

  leaveLive(): void {
    if (this.live) this.out.write(`${csi}?25h${csi}?1049l`);
    this.live = false;
    this.stopListening();
  }

  /** A line that replaces itself on a terminal (progress bars); on a file each call is a line. */
  overwrite(text: string): void {
    if (this.tty) {
      this.out.write(`\r${text}${csi}K`);
      this.lineOpen = text !== '';
    } else if (text !== '') {
      this.out.write(`${text}\n`);
    }
  }

  line(text = ''): void {
    this.endLine();
    this.out.write(`${text}\n`);
  }

  /** Ends an open progress line, so that what comes next (an error on stderr too) starts on its own line. */
  endLine(): void {
    if (this.lineOpen) this.out.write('\n');
    this.lineOpen = false;
  }
}
