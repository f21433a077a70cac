export { type AddressClass, classifyAddress } from "./addresses.js";
export { Allowlist, type AllowRule, parseAllowRule } from "./allowlist.js";
export {
  createEgressProxy,
  type EgressConnect,
  type EgressLookup,
  type EgressProxy,
  type EgressProxyOptions,
  type EgressTarget,
} from "./proxy.js";
