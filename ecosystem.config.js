// PM2 process file: the control API and the voice server, each restarted on crash with
// backoff, logs in ./logs, environment from the file named by CALLMEBACK_ENV_FILE (default
// ./.env, KEY=VALUE lines). Start: `pm2 start ecosystem.config.js`. Both commands are the real
// ones the README uses; run `.venv/bin/callmeback migrate` once per deploy before starting.
const fs = require("fs");
const path = require("path");

function loadEnv(file) {
  const env = {};
  if (!fs.existsSync(file)) return env;
  for (const raw of fs.readFileSync(file, "utf8").split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq < 1) continue;
    let value = line.slice(eq + 1).trim();
    if (/^(['"]).*\1$/.test(value)) value = value.slice(1, -1);
    env[line.slice(0, eq).trim()] = value;
  }
  return env;
}

const root = __dirname;
const env = { APP_ENV: "production", LOG_FORMAT: "json",
  ...loadEnv(process.env.CALLMEBACK_ENV_FILE || path.join(root, ".env")) };
const common = {
  cwd: root,
  interpreter: "none",
  env,
  autorestart: true,
  exp_backoff_restart_delay: 200,
  max_restarts: 50,
  min_uptime: "10s",
  merge_logs: true,
  time: false, // structlog already stamps each JSON line
};

module.exports = {
  apps: [
    {
      ...common,
      name: "callmeback-api",
      script: path.join(root, ".venv/bin/callmeback"),
      args: "serve-api",
      kill_timeout: 15000, // SIGTERM, then up to 15 s for in-flight requests
      out_file: path.join(root, "logs/api.out.log"),
      error_file: path.join(root, "logs/api.err.log"),
    },
    {
      ...common,
      name: "callmeback-voice",
      script: path.join(root, ".venv/bin/callmeback"),
      args: "serve-voice",
      // Live calls are drained on SIGTERM; give them time before PM2 sends SIGKILL.
      kill_timeout: 60000,
      out_file: path.join(root, "logs/voice.out.log"),
      error_file: path.join(root, "logs/voice.err.log"),
    },
  ],
};
