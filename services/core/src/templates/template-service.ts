import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  PortProtocol,
  type Template,
  TemplateSchema,
  type TemplateService,
} from "@devex/gen/devex/core/v1/template_pb.js";
import { pageOf } from "../paging.js";
import type { TemplateCatalog, TemplateRecord } from "./catalog.js";

/** TemplateService: the templates repls are created from. */
export function createTemplateService(catalog: TemplateCatalog): ServiceImpl<typeof TemplateService> {
  return {
    async listTemplates(request) {
      const all = await catalog.list();
      const matching = request.tag ? all.filter((template) => template.tags.includes(request.tag)) : all;
      const page = pageOf(
        matching.map((template) => template.name),
        request.pageSize,
        request.pageToken,
      );
      const byName = new Map(matching.map((template) => [template.name, template]));
      return {
        templates: page.items.map((name) => toTemplate(byName.get(name) as TemplateRecord)),
        nextPageToken: page.nextPageToken,
      };
    },
    async getTemplate(request) {
      const template = await catalog.get(request.name);
      if (!template) throw new ConnectError(`template ${request.name} not found`, Code.NotFound);
      return { template: toTemplate(template) };
    },
  };
}

/** The API form of a template. */
export function toTemplate(template: TemplateRecord): Template {
  return create(TemplateSchema, {
    name: template.name,
    displayName: template.displayName,
    description: template.description,
    runnerImage: template.runnerImage,
    startCommand: template.startCommand,
    ports: template.ports.map((port) => ({
      number: port.number,
      name: port.name,
      protocol: port.protocol === "http" ? PortProtocol.HTTP : PortProtocol.TCP,
    })),
    language: template.language,
    tags: template.tags,
    updatedAt: timestampFromMs(template.updatedAtMs),
    sizeBytes: BigInt(template.sizeBytes),
    resources: {
      memoryBytes: BigInt(template.resources?.memoryBytes ?? 0),
      cpuMillicores: template.resources?.cpuMillicores ?? 0,
      maxProcesses: template.resources?.maxProcesses ?? 0,
    },
  });
}
