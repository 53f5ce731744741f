// A GPS track drawn on a <canvas> without any map: latitude and longitude are projected to
// local metres (equirectangular around the track's centre, exact enough over a few km), fitted
// to the canvas with the same scale on both axes, north up. Used by the moderator console (a
// run's track, its flagged stretches, the part a crop keeps) and the spotter view (the trail of
// the runner's last positions).

const R_M = 6371008.8;
const COLORS = {
  path: "#ffd400",
  dim: "#5a5a5a",
  flag: "#ff6b6b",
  start: "#4cff8a",
  end: "#ffffff",
  text: "#c8c8c8",
  grid: "#262626",
};

/** Points [{lat, lon}] -> [{x, y}] in metres east and north of the bounding box centre. */
export function project(points) {
  if (!points.length) return [];
  let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
  for (const p of points) {
    minLat = Math.min(minLat, p.lat); maxLat = Math.max(maxLat, p.lat);
    minLon = Math.min(minLon, p.lon); maxLon = Math.max(maxLon, p.lon);
  }
  const lat0 = (minLat + maxLat) / 2;
  const lon0 = (minLon + maxLon) / 2;
  const kx = (Math.PI / 180) * R_M * Math.cos((lat0 * Math.PI) / 180);
  const ky = (Math.PI / 180) * R_M;
  return points.map((p) => ({ x: (p.lon - lon0) * kx, y: (p.lat - lat0) * ky }));
}

/**
 * The stretches of `points` that flags point at: from the flagged fix (`evidence.t`, else
 * `evidence.index`) for `evidence.duration_s` (a single fix when the flag has no duration).
 * Returns [{from, to, code}] as fix indexes, sorted.
 */
export function flaggedStretches(points, flags) {
  const out = [];
  if (!points.length) return out;
  const firstAtOrAfter = (t) => {
    let lo = 0, hi = points.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (points[mid].t < t) lo = mid + 1; else hi = mid;
    }
    return lo;
  };
  for (const f of flags || []) {
    const ev = f.evidence || {};
    let from = null;
    if (typeof ev.t === "number") from = firstAtOrAfter(ev.t);
    else if (Number.isInteger(ev.index)) from = Math.min(Math.max(ev.index, 0), points.length - 1);
    if (from === null) continue;
    let to = from;
    if (typeof ev.duration_s === "number" && ev.duration_s > 0) {
      to = Math.max(from, firstAtOrAfter(points[from].t + ev.duration_s) - 1);
      to = Math.min(to, points.length - 1);
    }
    out.push({ from, to, code: f.code });
  }
  return out.sort((a, b) => a.from - b.from);
}

function niceScale(metres) {
  const steps = [1, 2, 5];
  let base = 1;
  for (;;) {
    for (const s of steps) if (s * base >= metres) return s * base;
    base *= 10;
  }
}

/**
 * Draw `points` ([{lat, lon, t?}]) on `canvas`.
 * options: stretches [{from, to}] (drawn in red with a ring at their start), keep [first, stop)
 * (fixes outside are dimmed), trail (no start marker; the last point is the runner).
 * Returns what was drawn (also written to canvas.dataset for tests and debugging).
 */
export function drawTrack(canvas, points, { stretches = [], keep = null, trail = false } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 320;
  const cssH = canvas.clientHeight || 240;
  canvas.width = Math.round(cssW * ratio);
  canvas.height = Math.round(cssH * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, cssW, cssH);
  const summary = { points: points.length, stretches: stretches.length, kept: 0, width_m: 0 };
  if (!points.length) {
    ctx.fillStyle = COLORS.text;
    ctx.font = "14px system-ui, sans-serif";
    ctx.fillText("No track to draw", 12, 24);
    Object.assign(canvas.dataset, summary);
    return summary;
  }
  const xy = project(points);
  let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
  for (const p of xy) {
    minX = Math.min(minX, p.x); maxX = Math.max(maxX, p.x);
    minY = Math.min(minY, p.y); maxY = Math.max(maxY, p.y);
  }
  const pad = 18;
  const spanX = Math.max(maxX - minX, 20); // a standing runner still gets a 20 m frame
  const spanY = Math.max(maxY - minY, 20);
  const scale = Math.min((cssW - 2 * pad) / spanX, (cssH - 2 * pad - 16) / spanY);
  const cx = (minX + maxX) / 2;
  const cy = (minY + maxY) / 2;
  const px = (p) => [cssW / 2 + (p.x - cx) * scale, (cssH - 16) / 2 - (p.y - cy) * scale];
  summary.width_m = Math.round(maxX - minX);

  const [k0, k1] = keep || [0, points.length];
  summary.kept = Math.max(0, Math.min(k1, points.length) - Math.max(k0, 0));
  const line = (from, to, color, width) => {
    if (to <= from) return;
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    ctx.beginPath();
    for (let i = from; i <= to; i++) {
      const [x, y] = px(xy[i]);
      if (i === from) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    }
    ctx.stroke();
  };
  const last = points.length - 1;
  if (keep) {
    line(0, Math.max(0, k0), COLORS.dim, 2);
    line(Math.min(k1 - 1, last), last, COLORS.dim, 2);
    line(Math.max(k0, 0), Math.min(k1 - 1, last), COLORS.path, 3);
  } else {
    line(0, last, COLORS.path, 3);
  }
  for (const s of stretches) {
    line(s.from, Math.min(s.to, last), COLORS.flag, 6);
    const [x, y] = px(xy[s.from]);
    ctx.strokeStyle = COLORS.flag;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(x, y, 8, 0, 2 * Math.PI);
    ctx.stroke();
  }
  if (!trail) {
    const [sx, sy] = px(xy[0]);
    ctx.fillStyle = COLORS.start;
    ctx.beginPath();
    ctx.arc(sx, sy, 7, 0, 2 * Math.PI);
    ctx.fill();
  }
  const [ex, ey] = px(xy[last]);
  ctx.fillStyle = trail ? COLORS.path : COLORS.end;
  if (trail) {
    ctx.beginPath();
    ctx.arc(ex, ey, 9, 0, 2 * Math.PI);
    ctx.fill();
  } else {
    ctx.fillRect(ex - 6, ey - 6, 12, 12);
  }

  // scale bar, bottom left
  const barM = niceScale((cssW / 4) / scale);
  const barPx = barM * scale;
  ctx.strokeStyle = COLORS.text;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(pad, cssH - 8);
  ctx.lineTo(pad + barPx, cssH - 8);
  ctx.stroke();
  ctx.fillStyle = COLORS.text;
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(barM >= 1000 ? `${barM / 1000} km` : `${barM} m`, pad + barPx + 6, cssH - 4);
  ctx.fillText("N ↑", cssW - 34, 16);
  Object.assign(canvas.dataset, summary);
  return summary;
}
