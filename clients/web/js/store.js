// The run buffer: each GPS fix is written to IndexedDB as it arrives, so a reload, a crash or a
// lost network never loses a fix. A run is `recording` while it records, `pending` from Stop
// until the server has it, then its fixes are deleted. Falls back to localStorage where
// IndexedDB cannot open (some private modes).

const DB_NAME = "retrorun";
const DB_VERSION = 1;

function promised(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
  });
}

class IdbStore {
  constructor(db) { this.db = db; }

  static async open() {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains("runs")) db.createObjectStore("runs", { keyPath: "key" });
      if (!db.objectStoreNames.contains("fixes")) {
        db.createObjectStore("fixes", { keyPath: ["key", "seq"] });
      }
    };
    return new IdbStore(await promised(req));
  }

  async putRun(run) {
    const tx = this.db.transaction("runs", "readwrite");
    tx.objectStore("runs").put(run);
    await done(tx);
    return run;
  }

  getRun(key) {
    return promised(this.db.transaction("runs").objectStore("runs").get(key));
  }

  allRuns() {
    return promised(this.db.transaction("runs").objectStore("runs").getAll());
  }

  /** Write one fix and the run's running totals in one transaction. */
  async addFix(run, seq, fix) {
    const tx = this.db.transaction(["runs", "fixes"], "readwrite");
    tx.objectStore("fixes").put({ key: run.key, seq, fix });
    tx.objectStore("runs").put(run);
    await done(tx);
  }

  async fixes(key) {
    const range = IDBKeyRange.bound([key, 0], [key, Number.MAX_SAFE_INTEGER]);
    const rows = await promised(this.db.transaction("fixes").objectStore("fixes").getAll(range));
    return rows.sort((a, b) => a.seq - b.seq).map((r) => r.fix);
  }

  async deleteRun(key) {
    const tx = this.db.transaction(["runs", "fixes"], "readwrite");
    tx.objectStore("runs").delete(key);
    tx.objectStore("fixes").delete(IDBKeyRange.bound([key, 0], [key, Number.MAX_SAFE_INTEGER]));
    await done(tx);
  }

  async dropFixes(key) {
    const tx = this.db.transaction("fixes", "readwrite");
    tx.objectStore("fixes").delete(IDBKeyRange.bound([key, 0], [key, Number.MAX_SAFE_INTEGER]));
    await done(tx);
  }
}

class LocalStore {
  static RUNS = "retrorun.runs";
  runs() { return JSON.parse(localStorage.getItem(LocalStore.RUNS) || "{}"); }
  saveRuns(runs) { localStorage.setItem(LocalStore.RUNS, JSON.stringify(runs)); }
  async putRun(run) { const r = this.runs(); r[run.key] = run; this.saveRuns(r); return run; }
  async getRun(key) { return this.runs()[key]; }
  async allRuns() { return Object.values(this.runs()); }
  async addFix(run, seq, fix) {
    const list = await this.fixes(run.key);
    list[seq] = fix;
    localStorage.setItem(`retrorun.fixes.${run.key}`, JSON.stringify(list));
    await this.putRun(run);
  }
  async fixes(key) {
    return JSON.parse(localStorage.getItem(`retrorun.fixes.${key}`) || "[]").filter(Boolean);
  }
  async deleteRun(key) {
    const r = this.runs(); delete r[key]; this.saveRuns(r);
    await this.dropFixes(key);
  }
  async dropFixes(key) { localStorage.removeItem(`retrorun.fixes.${key}`); }
}

let opened;
/** The run buffer (opened once). */
export function runStore() {
  if (!opened) {
    opened = (typeof indexedDB === "undefined" ? Promise.reject(new Error("no IndexedDB"))
      : IdbStore.open()).catch(() => new LocalStore());
  }
  return opened;
}

/** The run being recorded by this runner, if any (a phone may be shared between runners). */
export async function activeRun(runnerId) {
  const runs = await (await runStore()).allRuns();
  return runs.filter((r) => r.state === "recording" && r.runnerId === runnerId)
    .sort((a, b) => b.startedAt - a.startedAt)[0];
}

/** This runner's stopped runs that the server does not have yet, oldest first. */
export async function pendingRuns(runnerId) {
  const runs = await (await runStore()).allRuns();
  return runs.filter((r) => r.state === "pending" && r.runnerId === runnerId)
    .sort((a, b) => a.startedAt - b.startedAt);
}
