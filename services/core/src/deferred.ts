import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";

/**
 * A service implementation that forwards every call to one made later: core's servers
 * must listen (so a port-0 URL is known) before the services that need that URL exist.
 */
export function deferredService<S extends DescService>(service: S, get: () => Partial<ServiceImpl<S>>): ServiceImpl<S> {
  const forwarding: Record<string, unknown> = {};
  for (const method of service.methods) {
    forwarding[method.localName] = (request: unknown, context: unknown) => {
      const handler = (get() as Record<string, ((request: unknown, context: unknown) => unknown) | undefined>)[
        method.localName
      ];
      if (!handler) throw new ConnectError(`${service.typeName}.${method.name} is not implemented`, Code.Unimplemented);
      return handler(request, context);
    };
  }
  return forwarding as ServiceImpl<S>;
}
