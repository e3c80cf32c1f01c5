// agentfleet's pi extension: agent_start / turn_end / agent_end (and tool execution) as one
// JSON line each, appended to the spool file the host agent tails (FLEET_HOOK_SPOOL).
// Loaded with `pi -e <this file>` by the host agent (agent/hooks/wiring.py). It must never
// disturb pi: every error is swallowed, nothing is printed, the write is synchronous and tiny.
import { appendFileSync } from "node:fs";

const spool = process.env.FLEET_HOOK_SPOOL ?? "";
const session = process.env.FLEET_SESSION ?? "";

function spoolLine(type: string, fields: Record<string, unknown>): void {
  if (!spool) return;
  try {
    const line = JSON.stringify({
      v: 1,
      runtime: "pi",
      session,
      at: Date.now() / 1000,
      payload: { type, ...fields },
    });
    appendFileSync(spool, line + "\n", { mode: 0o600 });
  } catch {
    // the agent may be down or the spool gone: pi goes on
  }
}

function cut(value: unknown): unknown {
  const s = typeof value === "string" ? value : JSON.stringify(value ?? null);
  return s.length > 2000 ? s.slice(0, 2000) + "…" : s;
}

export default function (pi: any) {
  pi.on("session_start", async () => spoolLine("session_start", {}));
  pi.on("agent_start", async () => spoolLine("agent_start", {}));
  pi.on("turn_end", async () => spoolLine("turn_end", {}));
  // An interrupted prompt ends too: its last assistant message says "aborted".
  pi.on("agent_end", async (event: any) => {
    const messages = Array.isArray(event?.messages) ? event.messages : [];
    const last = messages.filter((m: any) => m?.role === "assistant").pop();
    spoolLine("agent_end", { stopReason: last?.stopReason ?? null });
  });
  pi.on("tool_execution_start", async (event: any) =>
    spoolLine("tool_execution_start", {
      toolName: event?.toolName,
      toolCallId: event?.toolCallId,
      args: cut(event?.args),
    }),
  );
  pi.on("tool_execution_end", async (event: any) =>
    spoolLine("tool_execution_end", {
      toolName: event?.toolName,
      toolCallId: event?.toolCallId,
      isError: Boolean(event?.isError),
    }),
  );
}
