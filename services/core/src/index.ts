export { coreRoutes } from "./routes.js";
