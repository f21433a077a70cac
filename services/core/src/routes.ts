import type { ConnectRouter } from "@connectrpc/connect";
import { AdminService } from "@devex/gen/devex/core/v1/admin_pb.js";
import { AuthService } from "@devex/gen/devex/core/v1/auth_pb.js";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { TemplateService } from "@devex/gen/devex/core/v1/template_pb.js";

/** The services of core. Methods without an implementation answer `Unimplemented`. */
export function coreRoutes(): (router: ConnectRouter) => void {
  return (router) => {
    router.service(AuthService, {});
    router.service(ReplService, {});
    router.service(TemplateService, {});
    router.service(AdminService, {});
  };
}
