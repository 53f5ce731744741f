// Offline shell: the app's static files come from the cache when the network is gone.
// API calls are never cached (and never intercepted): the run buffer in IndexedDB covers them.

const VERSION = "retrorun-shell-v4";
const SHELL = [
  "/",
  "/index.html",
  "/app.css",
  "/manifest.webmanifest",
  "/icon.svg",
  "/icon-192.png",
  "/icon-512.png",
  "/js/app.js",
  "/js/api.js",
  "/js/store.js",
  "/js/recorder.js",
  "/js/upload.js",
  "/js/ui.js",
  "/js/room.js",
  "/js/trackplot.js",
  "/js/alerts.js",
  "/js/racecontrol.js",
  "/js/screens/auth.js",
  "/js/screens/home.js",
  "/js/screens/record.js",
  "/js/screens/runs.js",
  "/js/screens/boards.js",
  "/js/screens/more.js",
  "/js/screens/moderation.js",
  "/js/screens/race.js",
  "/js/screens/drill.js",
  "/js/screens/clubs.js",
  "/js/screens/spotters.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(VERSION).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) if (key !== VERSION) await caches.delete(key);
    await self.clients.claim();
  })());
});

// Network first (the server revalidates cheaply with ETags), the cache when offline.
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  if (/^\/(api|ws|docs|redoc|openapi\.json|healthz|readyz|metrics)(\/|$)/.test(url.pathname)) return;
  event.respondWith((async () => {
    const cache = await caches.open(VERSION);
    try {
      const response = await fetch(event.request);
      if (response.ok) cache.put(event.request, response.clone());
      return response;
    } catch (err) {
      const cached = await cache.match(event.request, { ignoreSearch: true })
        || (event.request.mode === "navigate" ? await cache.match("/index.html") : undefined);
      if (cached) return cached;
      throw err;
    }
  })());
});
