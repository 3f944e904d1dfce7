"""The Azure Functions app: trigger functions only; decisions live in shared.dispatch."""

import azure.functions as func

app = func.FunctionApp()
