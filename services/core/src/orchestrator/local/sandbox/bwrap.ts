import { type ChildProcess, execFile, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { access, lstat, mkdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { type CgroupHierarchies, detectCgroups, SandboxCgroups } from "./cgroups.js";
import {
  assertLimits,
  assertSandboxId,
  assertSocketPathBudget,
  assertTraversable,
  createHostDirs,
  INNER_DIRS,
  leasesDir,
  listRecords,
  prepareRoot,
  type ReadOnlyBind,
  readOnlyBinds,
  readRecord,
  removeSandboxFiles,
  type SandboxPaths,
  type SandboxRecord,
  sandboxPaths,
  stateDir,
  writeEtcFiles,
  writeRecord,
} from "./layout.js";
import { compileSeccompFilter } from "./seccomp.js";
import type { Sandbox, SandboxDriver, SandboxDriverOptions, SandboxLimits, SandboxSpawnOptions } from "./types.js";
import { SandboxSetupError } from "./types.js";
import { leaseUid, releaseUid } from "./uids.js";

const run = promisify(execFile);

const HOSTNAME = "repl";
/** Inside path of the user leaf dirs: `/run/cgroup/<n>`, one per cgroup v1 controller (one in v2). */
const INNER_CGROUP_DIR = "/run/cgroup";
/** The host's system, read-only; merged-usr symlinks are recreated as symlinks. */
const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/** The only parts of the host's /etc a repl sees (no credentials, no host configuration). */
const ETC_ENTRIES = [
  "ld.so.cache",
  "ld.so.conf",
  "ld.so.conf.d",
  "alternatives",
  "ssl",
  "ca-certificates",
  "ca-certificates.conf",
  "localtime",
  "timezone",
  "nsswitch.conf",
  "host.conf",
  "gai.conf",
  "resolv.conf",
  "protocols",
  "services",
  "bash.bashrc",
  "profile",
  "profile.d",
  "inputrc",
  "terminfo",
  "vim",
  "mime.types",
  "shells",
  "os-release",
  "debian_version",
  "locale.alias",
  "gitconfig",
  "ssh/ssh_config",
  "ssh/ssh_config.d",
];
/** File descriptors the root shim opens for bwrap (dash knows single-digit fds only). */
const FD = { seccomp: 5, passwd: 6, group: 7, hosts: 8, args: 9 } as const;
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** What one core start learns once about this machine. */
interface BwrapSetup {
  bwrap: string;
  setpriv: string;
  seccompFilter: string;
  hierarchies: CgroupHierarchies;
  systemArgs: string[];
  readOnlyBinds: ReadOnlyBind[];
}

async function findExecutable(name: string, fix: string): Promise<string> {
  for (const dir of (process.env.PATH ?? DEFAULT_PATH).split(":").concat(["/usr/bin", "/bin"])) {
    const path = join(dir, name);
    if (
      await access(path).then(
        () => true,
        () => false,
      )
    )
      return path;
  }
  throw new SandboxSetupError(`${name} not found in PATH: ${fix}`);
}

/** Single-quotes a word for sh. */
const quote = (word: string): string => `'${word.replaceAll("'", `'\\''`)}'`;

async function systemArgs(): Promise<string[]> {
  const args: string[] = [];
  for (const dir of SYSTEM_DIRS) {
    const info = await lstat(dir).catch(() => undefined);
    if (info?.isSymbolicLink()) args.push("--symlink", await readlink(dir), dir);
    else if (info?.isDirectory()) args.push("--ro-bind", dir, dir);
  }
  for (const entry of ETC_ENTRIES) args.push("--ro-bind-try", `/etc/${entry}`, `/etc/${entry}`);
  return args;
}

/** Wraps a low-level failure while creating a sandbox in a message naming cause and fix. */
function setupError(what: string, error: unknown): Error {
  if (error instanceof SandboxSetupError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
    return new SandboxSetupError(
      `${what}: ${(error as Error).message}; core must run as root (or own a delegated cgroup subtree) to sandbox repls, ` +
        "or start it with --sandbox none",
    );
  }
  return error as Error;
}

class BwrapSandbox implements Sandbox {
  readonly gid: number;
  readonly hostDirs;
  readonly innerDirs = INNER_DIRS;
  readonly userCgroupDirs: string[];

  constructor(
    readonly id: string,
    readonly uid: number,
    private readonly paths: SandboxPaths,
    private readonly cgroups: SandboxCgroups,
    private readonly setup: BwrapSetup,
    private readonly options: SandboxDriverOptions,
  ) {
    this.gid = uid;
    this.hostDirs = paths.dirs;
    this.userCgroupDirs = cgroups.userLeafDirs().map((_, i) => `${INNER_CGROUP_DIR}/${i}`);
  }

  private bwrapArgs(): string[] {
    const { dirs } = this.paths;
    const args = [
      "--unshare-user",
      "--uid",
      String(this.uid),
      "--gid",
      String(this.gid),
      "--disable-userns",
      "--unshare-pid",
      "--unshare-ipc",
      "--unshare-uts",
      "--unshare-net",
      // cgroup v2 mounted with nsdelegate refuses moves between cgroups outside the namespace's root,
      // which the runner must do (runner leaf -> user leaf); v1 has no such rule.
      ...(this.cgroups.version === 1 ? ["--unshare-cgroup"] : []),
      "--hostname",
      HOSTNAME,
      "--new-session",
      ...this.setup.systemArgs,
      "--ro-bind-data",
      String(FD.passwd),
      "/etc/passwd",
      "--ro-bind-data",
      String(FD.group),
      "/etc/group",
      "--ro-bind-data",
      String(FD.hosts),
      "/etc/hosts",
      "--proc",
      "/proc",
      "--dev",
      "/dev",
      // The workspace is inside the home (see INNER_DIRS).
      "--bind",
      dirs.home,
      INNER_DIRS.home,
      "--bind",
      dirs.tmp,
      INNER_DIRS.tmp,
      "--bind",
      dirs.run,
      INNER_DIRS.run,
    ];
    for (const [i, dir] of this.cgroups.userLeafDirs().entries()) args.push("--bind", dir, `${INNER_CGROUP_DIR}/${i}`);
    for (const bind of this.setup.readOnlyBinds) args.push("--ro-bind", bind.source, bind.dest);
    args.push("--remount-ro", "/", "--chdir", INNER_DIRS.home, "--seccomp", String(FD.seccomp));
    return args;
  }

  spawn(argv: string[], options: SandboxSpawnOptions): ChildProcess {
    if (argv.length === 0) throw new Error("spawn needs a program");
    if (Array.isArray(options.stdio) && options.stdio.length > FD.seccomp) {
      throw new Error(`sandbox spawn supports at most ${FD.seccomp} stdio entries (fds ${FD.seccomp}+ are bwrap's)`);
    }
    const { etc } = this.paths;
    // bwrap reads its options from a file (--args), not its command line: the sandbox's pid 1
    // is bwrap itself, whose command line would show the repl every host path it binds.
    const argsFile = join(etc, "bwrap-args");
    writeFileSync(
      argsFile,
      this.bwrapArgs()
        .map((arg) => `${arg}\0`)
        .join(""),
      { mode: 0o600 },
    );
    // As root: join the runner leaf of every cgroup (so nothing runs unplaced, even for an instant),
    // open what bwrap reads, then drop to the sandbox uid with no groups and no capabilities.
    const script = [
      ...this.cgroups.runnerProcsFiles().map((file) => `echo $$ > ${quote(file)}`),
      `exec ${FD.seccomp}< ${quote(this.setup.seccompFilter)} ${FD.passwd}< ${quote(join(etc, "passwd"))} ` +
        `${FD.group}< ${quote(join(etc, "group"))} ${FD.hosts}< ${quote(join(etc, "hosts"))} ` +
        `${FD.args}< ${quote(argsFile)}`,
      `exec ${quote(this.setup.setpriv)} --reuid=${this.uid} --regid=${this.gid} --clear-groups --no-new-privs -- ` +
        `${quote(this.setup.bwrap)} --args ${FD.args} -- "$@"`,
    ].join(" && ");
    const env = {
      PATH: DEFAULT_PATH,
      HOME: INNER_DIRS.home,
      TMPDIR: INNER_DIRS.tmp,
      USER: "user",
      LOGNAME: "user",
      SHELL: "/bin/bash",
      ...options.env,
    };
    return spawn("/bin/sh", ["-c", script, "devex-sandbox", ...argv], {
      env,
      stdio: options.stdio,
      detached: true,
      cwd: "/",
    });
  }

  async setLimits(limits: SandboxLimits): Promise<void> {
    assertLimits(limits);
    await this.cgroups.setLimits(limits);
  }

  pids(): Promise<number[]> {
    return this.cgroups.pids();
  }

  signal(signal: NodeJS.Signals): Promise<void> {
    return this.cgroups.signal(signal);
  }

  kill(): Promise<void> {
    return this.cgroups.kill();
  }

  async destroy(options?: { keepDirs?: boolean }): Promise<void> {
    await this.cgroups.kill();
    await this.cgroups.remove();
    await removeSandboxFiles(this.paths, options?.keepDirs ?? false);
    await releaseUid(leasesDir(this.options.root), this.uid, this.id);
    this.options.logger.info(
      { sandboxId: this.id, uid: this.uid, keepDirs: options?.keepDirs ?? false },
      "sandbox destroyed",
    );
  }
}

/** Sandboxes with bubblewrap, a leased uid per sandbox, cgroups and a seccomp filter. */
export class BwrapSandboxDriver implements SandboxDriver {
  readonly kind = "bwrap" as const;
  private setup: Promise<BwrapSetup> | undefined;
  private readonly uidBase: number;
  private readonly uidCount: number;

  constructor(private readonly options: SandboxDriverOptions) {
    this.uidBase = options.uidBase ?? 200_000;
    this.uidCount = options.uidCount ?? 65_536;
  }

  /** Learns about the machine once; a failure is not cached, so a fixed machine works on retry. */
  private ready(): Promise<BwrapSetup> {
    this.setup ??= this.prepare().catch((error: unknown) => {
      this.setup = undefined;
      throw error;
    });
    return this.setup;
  }

  private async prepare(): Promise<BwrapSetup> {
    const { root, logger } = this.options;
    if (process.getuid?.() !== 0) {
      throw new SandboxSetupError(
        "the bwrap sandbox needs core to run as root (it runs each repl as its own uid); use --sandbox none otherwise",
      );
    }
    const bwrap = await findExecutable("bwrap", "install bubblewrap ('apt-get install bubblewrap')");
    const setpriv = await findExecutable("setpriv", "install util-linux ('apt-get install util-linux')");
    const maxUserNamespaces = Number(
      (await readFile("/proc/sys/user/max_user_namespaces", "utf8").catch(() => "0")).trim(),
    );
    if (!(maxUserNamespaces > 0)) {
      throw new SandboxSetupError(
        "user namespaces are disabled (user.max_user_namespaces is 0): run 'sysctl -w user.max_user_namespaces=15000'",
      );
    }
    const clone = await readFile("/proc/sys/kernel/unprivileged_userns_clone", "utf8").catch(() => "1");
    if (clone.trim() === "0") {
      throw new SandboxSetupError(
        "unprivileged user namespaces are disabled: run 'sysctl -w kernel.unprivileged_userns_clone=1'",
      );
    }
    await prepareRoot(root, true);
    await assertTraversable(join(root, "sbx_probe"), "sandbox root");
    const binds = await readOnlyBinds(root, this.options.readOnlyPaths);
    const hierarchies = await detectCgroups(
      this.options.cgroupRoot ?? "/sys/fs/cgroup",
      this.options.cgroupParent ?? "devex",
    );
    for (const parent of Object.values(hierarchies.parents)) {
      await mkdir(parent, { recursive: true }).catch((error: unknown) => {
        throw setupError(`cannot create cgroup ${parent}`, error);
      });
    }
    const setup: BwrapSetup = {
      bwrap,
      setpriv,
      hierarchies,
      seccompFilter: await compileSeccompFilter(stateDir(root)),
      readOnlyBinds: binds,
      systemArgs: await systemArgs(),
    };
    // Proves user namespaces work for an unprivileged uid here (AppArmor or a container may forbid them).
    try {
      await run(
        setpriv,
        [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          "--",
          bwrap,
          "--unshare-all",
          "--disable-userns",
          "--unshare-user",
          ...setup.systemArgs,
          "--",
          "/bin/true",
        ],
        { timeout: 10_000 },
      );
    } catch (error) {
      const detail = ((error as { stderr?: string }).stderr ?? String(error)).trim();
      throw new SandboxSetupError(
        `bwrap cannot create a sandbox as an unprivileged uid (${detail}): allow unprivileged user namespaces ` +
          "(sysctl kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu) or use --sandbox none",
      );
    }
    logger.info({ cgroupVersion: hierarchies.version, cgroups: hierarchies.parents, bwrap }, "bwrap sandboxes ready");
    return setup;
  }

  async check(): Promise<void> {
    await this.ready();
  }

  async create(id: string, limits: SandboxLimits): Promise<Sandbox> {
    assertSandboxId(id);
    assertLimits(limits);
    const paths = sandboxPaths(this.options.root, id);
    assertSocketPathBudget(paths);
    const setup = await this.ready();
    if (await readRecord(paths)) throw new Error(`sandbox ${id} already exists`);
    const uid = await leaseUid(leasesDir(this.options.root), this.uidBase, this.uidCount, id);
    const cgroups = SandboxCgroups.forSandbox(setup.hierarchies, id);
    let createdDirs = false;
    try {
      await createHostDirs(paths, uid, uid);
      createdDirs = true;
      await writeEtcFiles(paths, uid, uid, HOSTNAME);
      await cgroups
        .create(
          limits,
          {
            memoryBytes: this.options.runnerMemoryBytes ?? 1024 ** 3,
            maxProcesses: this.options.runnerMaxProcesses ?? 512,
          },
          uid,
          uid,
        )
        .catch((error: unknown) => {
          throw setupError(`cannot set up the cgroups of sandbox ${id}`, error);
        });
      const record: SandboxRecord = {
        id,
        kind: "bwrap",
        uid,
        gid: uid,
        createdAtMs: Date.now(),
        limits,
        cgroups: { version: cgroups.version, groups: cgroups.groups },
      };
      await writeRecord(paths, record);
    } catch (error) {
      await cgroups.remove().catch(() => undefined);
      // Leftover dirs of an earlier sandbox with this id (kept workspace) are not ours to delete.
      await removeSandboxFiles(paths, !createdDirs).catch(() => undefined);
      await releaseUid(leasesDir(this.options.root), uid, id).catch(() => undefined);
      throw error;
    }
    this.options.logger.info({ sandboxId: id, uid, limits }, "sandbox created");
    return new BwrapSandbox(id, uid, paths, cgroups, setup, this.options);
  }

  async open(id: string): Promise<Sandbox | undefined> {
    assertSandboxId(id);
    const paths = sandboxPaths(this.options.root, id);
    const record = await readRecord(paths);
    if (record?.kind !== "bwrap" || !record.cgroups) return undefined;
    const setup = await this.ready();
    const cgroups = new SandboxCgroups(record.cgroups.version, record.cgroups.groups);
    return new BwrapSandbox(id, record.uid, paths, cgroups, setup, this.options);
  }

  list(): Promise<string[]> {
    return listRecords(this.options.root, this.kind);
  }
}
