import { type Code, ConnectError } from "@connectrpc/connect";

/** The Connect code a call fails with, or "ok": takes the call's promise or a function making it. */
export async function codeOf(call: Promise<unknown> | (() => Promise<unknown>)): Promise<Code | "ok"> {
  try {
    await (typeof call === "function" ? call() : call);
    return "ok";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}
