import Hummingbird
import NIOCore

/// `GET /dashboard`: one page for operators that polls the admin JSON (status, health,
/// metrics) every two seconds. No external resources: its script and style are
/// `/dashboard/app.js` and `/dashboard/style.css`, so the page can send
/// `Content-Security-Policy: default-src 'self'` (no inline script may run, whatever text the
/// admin JSON carries) and every value is written with `textContent`, never parsed as HTML.

struct DashboardRoute {
    /// Headers of the page and its files: no caching, no MIME sniffing, no framing by other
    /// sites, nothing loaded from elsewhere.
    static func headers(contentType: String) -> HTTPFields {
        [
            .contentType: contentType, .cacheControl: "no-store", .contentSecurityPolicy: "default-src 'self'; frame-ancestors 'none'",
            .xContentTypeOptions: "nosniff",
        ]
    }

    func register(on router: some RouterMethods<AppRequestContext>) {
        for (path, contentType, text) in [
            ("/dashboard", "text/html; charset=utf-8", Self.page), ("/dashboard/app.js", "text/javascript; charset=utf-8", Self.script),
            ("/dashboard/style.css", "text/css; charset=utf-8", Self.style),
        ] {
            let bytes = ByteBuffer(string: text)
            router.getAndHead(RouterPath(path)) { _, _ -> Response in
                Response(status: .ok, headers: Self.headers(contentType: contentType), body: .init(byteBuffer: bytes))
            }
        }
    }

    static let page = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>ibge-cache</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <link rel="stylesheet" href="/dashboard/style.css">
        </head><body>
        <h1>ibge-cache <span id="health" class="state">…</span> <span id="backend" class="state">…</span></h1>
        <p class="glance">Redis <span id="redis" class="state">…</span> IBGE <span id="ibge" class="state">…</span>
        circuit <span id="circuit" class="state">…</span> last full preload <span id="preload" class="state">…</span></p>
        <p id="error"></p>
        <div class="grid history">
        <div class="card"><h2>Hit rate % <span id="now-hit"></span></h2><svg id="chart-hit" viewBox="0 0 300 60"></svg></div>
        <div class="card"><h2>Requests/s <span id="now-rps"></span></h2><svg id="chart-rps" viewBox="0 0 300 60"></svg></div>
        <div class="card"><h2>Load p99 ms <span id="now-p99"></span></h2><svg id="chart-p99" viewBox="0 0 300 60"></svg></div>
        <div class="card"><h2>Redis latency ms <span id="now-redis"></span></h2><svg id="chart-redis" viewBox="0 0 300 60"></svg></div>
        </div>
        <div class="grid">
        <div class="card"><h2>Requests</h2><table id="requests"></table></div>
        <div class="card"><h2>Loads</h2><table id="loads"></table></div>
        <div class="card"><h2>L1 (in-process)</h2><table id="l1"></table></div>
        <div class="card"><h2>Redis and IBGE</h2><table id="checks"></table></div>
        </div>
        <script src="/dashboard/app.js"></script>
        </body></html>
        """

    static let style = """
        body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222;background:#fafafa}
        h1{font-size:1.3rem;margin:0 0 1rem} h2{font-size:1rem;margin:0 0 .5rem}
        .grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:1rem}
        .card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:1rem}
        .state{font-weight:600;padding:.1rem .5rem;border-radius:4px}
        .healthy,.up,.redis,.closed{background:#d9f2dc}.degraded,.memory-fallback,.down,.open{background:#fde7c4}.unhealthy{background:#f8d0d0}
        table{border-collapse:collapse;width:100%} td{padding:.15rem 0;border-bottom:1px solid #f0f0f0} td:last-child{text-align:right;font-variant-numeric:tabular-nums}
        #error{color:#b00} .glance .state{margin-right:1rem} .history{margin-bottom:1rem}
        svg{width:100%;height:60px;background:#fcfcfc} polyline{fill:none;stroke:#2a6;stroke-width:1.5}
        """

    static let script = """
        "use strict";
        // Every value is text (textContent): nothing the admin JSON says is parsed as HTML.
        const rows = (id, pairs) => {
          const table = document.getElementById(id);
          table.replaceChildren(...pairs.map(([k, v]) => {
            const row = document.createElement("tr");
            for (const text of [k, v ?? "—"]) {
              const cell = document.createElement("td");
              cell.textContent = String(text);
              row.appendChild(cell);
            }
            return row;
          }));
        };
        const states = ["healthy", "degraded", "unhealthy", "redis", "memory", "memory-fallback", "up", "down", "open", "closed"];
        const label = (id, text) => {
          const e = document.getElementById(id);
          e.textContent = String(text);
          e.className = "state " + (states.includes(text) ? text : "");
        };
        // The last 15 minutes of polls, kept in the page (nothing is stored on the server).
        const history = [];
        const keepMs = 15 * 60 * 1000;
        const svgNS = "http://www.w3.org/2000/svg";
        const chart = (id, values) => {
          const svg = document.getElementById(id);
          const points = values.filter(v => v != null && isFinite(v));
          const max = Math.max(1e-9, ...points);
          const line = document.createElementNS(svgNS, "polyline");
          const step = values.length > 1 ? 300 / (values.length - 1) : 0;
          line.setAttribute("points", values.map((v, i) => `${(i * step).toFixed(1)},${(58 - (v ?? 0) / max * 56).toFixed(1)}`).join(" "));
          svg.replaceChildren(line);
        };
        const text = (id, value) => { document.getElementById(id).textContent = value == null ? "" : String(value); };
        async function refresh() {
          try {
            const [status, health, metrics] = await Promise.all(["status", "health", "metrics"].map(
              p => fetch("/api/ibge/cache/" + p).then(r => r.json())));
            const m = metrics.metrics, s = status.status;
            label("health", health.status); label("backend", s.backend);
            const c0 = health.checks;
            label("redis", c0.redis.status); label("ibge", c0.source.status);
            label("circuit", m.upstream_circuit_open == null ? "none" : (m.upstream_circuit_open ? "open" : "closed"));
            const last = s.preload && s.preload.last_success;
            label("preload", last ? Math.round(Date.now() / 1000 - last) + " s ago" : "never");
            const now = Date.now();
            const previous = history[history.length - 1];
            const rps = previous ? Math.max(0, (m.total_requests - previous.total) / ((now - previous.at) / 1000)) : null;
            history.push({at: now, total: m.total_requests, hit: m.hit_rate_percent, rps,
              p99: m.load_ms ? m.load_ms.p99 : null, redis: c0.redis.latency_ms ?? null});
            while (history.length && now - history[0].at > keepMs) history.shift();
            for (const [key, id] of [["hit", "hit"], ["rps", "rps"], ["p99", "p99"], ["redis", "redis"]]) {
              chart("chart-" + id, history.map(h => h[key]));
              const latest = history[history.length - 1][key];
              text("now-" + id, latest == null ? "" : (Math.round(latest * 100) / 100));
            }
            rows("requests", [["total", m.total_requests], ["hits (L1 / Redis)", `${m.l1_hits} / ${m.l2_hits}`],
              ["misses", m.misses], ["hit rate", m.hit_rate_percent + " %"], ["coalesced waiters", m.coalesced_waiters],
              ["stale served", m.stale_served], ["embedded fallbacks", m.embedded_fallbacks]]);
            rows("loads", [["loads", m.loads], ["errors", m.load_errors], ["in flight", m.loads_in_flight],
              ["lock waits", m.lock_waits], ["eager refreshes", m.eager_refreshes], ["soft timeouts", m.soft_timeouts],
              ["p50 / p99 ms", m.load_ms ? `${m.load_ms.p50} / ${m.load_ms.p99}` : null]]);
            rows("l1", [["entries", `${s.l1.entries} / ${s.l1.max_entries}`], ["MiB", (s.l1.bytes / 1048576).toFixed(1) + " / " + (s.l1.max_bytes / 1048576).toFixed(0)],
              ["evictions", m.l1_evictions], ["expirations", m.l1_expirations]]);
            const c = health.checks;
            rows("checks", [["Redis", c.redis.status + (c.redis.latency_ms != null ? ` (${c.redis.latency_ms} ms)` : "")],
              ["keys under " + s.key_prefix, s.keys ? s.keys.count : null], ["fallback activations", m.fallback_activations],
              ["backplane sent / received", `${m.backplane_sent} / ${m.backplane_received}`], ["source", c.source.status],
              ["", c.source.detail]]);
            document.getElementById("error").textContent = "";
          } catch (e) { document.getElementById("error").textContent = "cannot reach the admin API: " + e; }
        }
        refresh(); setInterval(refresh, 2000);
        """
}
