"""The demo Space: base and style-tuned answers side by side, streamed from one batched generate call.

One base model sits in memory with every style adapter loaded. A request runs ONE ``generate`` on a batch of the
same prompt twice: row 0 is the base model, row 1 the tuned one (each LoRA delta computed once for the batch and
scaled per row, or peft's mixed-adapter batches, ``adapter_names=["__base__", style]``, for other adapter kinds). A streamer that understands batches feeds both columns as tokens arrive.

This module is the Space's runtime and travels inside every published Space folder (as ``space_app.py``, see
``hubstyle.space_folder``), where hubstyle is not installed: it imports only torch, transformers, peft, gradio and
ZeroGPU's optional ``spaces``, and loads models the way the cards tell a stranger to (``AutoModelForCausalLM``,
``PeftModel``). ``app.py`` only calls :func:`load_settings` and :func:`launch`.

The runtime is three files, bottom up: ``space_settings`` (the config and its limits), ``space_models`` (loading and
batched generation) and this one (the Gradio Blocks). Each imports the ones below as ``hubstyle.space_*`` where
hubstyle is installed, else as the copies beside it in the Space folder.
"""

import os

# Gradio reads this at import and at Blocks() time (a version check and telemetry go out otherwise).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

try:
    from hubstyle.space_settings import (  # noqa: F401 - the runtime's names, importable from here
        ADAPTERS_ENV,
        BASE_ADAPTER_NAME,
        BASE_ENV,
        CONFIG_KEYS,
        DEMO_CAPTION,
        DEMO_COLUMN_WIDTHS,
        DEMO_COLUMNS,
        DEMO_TABLE_CSS,
        DEMO_TABLE_FILE,
        LIMIT_KEYS,
        PLAIN_ASSISTANT,
        PLAIN_USER,
        SPACE_CONFIG_FILE,
        HubstyleError,
        SpaceSettings,
        demo_row,
        load_settings,
        parse_adapters,
    )
    from hubstyle.space_models import (  # noqa: F401 - the runtime's names, importable from here
        _STOP_EVENTS,
        BatchTextStreamer,
        RowScaledLora,
        SideBySide,
        StopOnEvent,
        bf16_supported,
        chat_prompt,
        check_prompt,
        context_length,
        device,
        gpu,
        load_model,
        side_by_side,
        stop_event,
        stream_side_by_side,
    )
except ImportError:  # in a published Space folder, without hubstyle: the copies beside this file
    from space_settings import (  # noqa: F401
        ADAPTERS_ENV,
        BASE_ADAPTER_NAME,
        BASE_ENV,
        CONFIG_KEYS,
        DEMO_CAPTION,
        DEMO_COLUMN_WIDTHS,
        DEMO_COLUMNS,
        DEMO_TABLE_CSS,
        DEMO_TABLE_FILE,
        LIMIT_KEYS,
        PLAIN_ASSISTANT,
        PLAIN_USER,
        SPACE_CONFIG_FILE,
        HubstyleError,
        SpaceSettings,
        demo_row,
        load_settings,
        parse_adapters,
    )
    from space_models import (  # noqa: F401
        _STOP_EVENTS,
        BatchTextStreamer,
        RowScaledLora,
        SideBySide,
        StopOnEvent,
        bf16_supported,
        chat_prompt,
        check_prompt,
        context_length,
        device,
        gpu,
        load_model,
        side_by_side,
        stop_event,
        stream_side_by_side,
    )


# ---------------------------------------------------------------------------------------------------------------
# The Blocks


def local_theme():
    """Return the Space's theme: Gradio's default colours with system fonts (no font is fetched from anywhere)."""
    import gradio as gr

    return gr.themes.Default(
        font=[gr.themes.Font("system-ui"), gr.themes.Font("Segoe UI"), gr.themes.Font("Roboto"), "sans-serif"],
        font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("DejaVu Sans Mono"), "monospace"],
    )


def build_demo(settings: SpaceSettings):
    """Return the Gradio Blocks of the Space (the model is loaded now; nothing is generated at start-up)."""
    import gradio as gr

    key = settings.cache_key()
    model = side_by_side(settings)
    names = list(settings.adapters)
    default_new = min(64, settings.max_new_tokens)

    def generate(prompt, adapter, max_new_tokens, temperature, top_p, seed, request: gr.Request):
        try:
            prompt = check_prompt(prompt, settings.max_prompt_chars)
            if adapter not in names:
                raise HubstyleError(f"unknown adapter '{adapter}'; choose one of {', '.join(names)}")
            new = max(1, min(int(max_new_tokens or default_new), settings.max_new_tokens))
            session = getattr(request, "session_hash", None) or "anonymous"
            yield "", ""
            yield from stream_side_by_side(
                key, prompt, adapter, new, float(temperature or 0), float(top_p or 1), int(seed or 0), session
            )
        except HubstyleError as err:
            raise gr.Error(str(err)) from err

    def stop(request: gr.Request) -> None:
        event = _STOP_EVENTS.get(getattr(request, "session_hash", None) or "anonymous")
        if event is not None:
            event.set()

    def tuned_label(adapter: str):
        return gr.update(label=f"With the '{adapter}' adapter")

    with gr.Blocks(title=settings.title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {settings.title}\n\n{settings.description}")
        with gr.Row():
            prompt = gr.Textbox(
                label="Prompt",
                lines=3,
                placeholder="To be, or not to be,",
                info=f"At most {settings.max_prompt_chars} characters.",
                elem_id="prompt",
                scale=3,
            )
            adapter = gr.Dropdown(choices=names, value=names[0], label="Style adapter", elem_id="adapter", scale=1)
        with gr.Accordion("Generation settings", open=False):
            with gr.Row():
                max_new = gr.Slider(
                    1, settings.max_new_tokens, value=default_new, step=1, label="Max new tokens", elem_id="max-new"
                )
                temperature = gr.Slider(
                    0.0, 2.0, value=0.7, step=0.05, label="Temperature (0 = greedy)", elem_id="temperature"
                )
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p", elem_id="top-p")
                seed = gr.Number(value=0, precision=0, label="Seed (same seed, same sample)", elem_id="seed")
        with gr.Row():
            run_btn = gr.Button("Generate", variant="primary", elem_id="generate")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Row(equal_height=True):
            base_out = gr.Textbox(label="Base model", lines=8, interactive=False, elem_id="base-output")
            tuned_out = gr.Textbox(
                label=f"With the '{names[0]}' adapter", lines=8, interactive=False, elem_id="tuned-output"
            )
        if settings.examples:
            gr.Examples(examples=[[e] for e in settings.examples], inputs=[prompt], cache_examples=False)
        gr.Markdown(settings.demo_caption, elem_id="demo-caption")
        gr.Dataframe(
            value={"headers": list(DEMO_COLUMNS), "data": [[r[c] for c in DEMO_COLUMNS] for r in settings.demo_rows]},
            headers=list(DEMO_COLUMNS),
            interactive=False,
            wrap=True,
            column_widths=DEMO_COLUMN_WIDTHS,
            label="Demo table",
            elem_id="demo-table",
        )

        inputs = [prompt, adapter, max_new, temperature, top_p, seed]
        # one event for button and Enter: one queue slot drives the model, one Stop cancels it
        event = gr.on(
            [run_btn.click, prompt.submit],
            generate,
            inputs,
            [base_out, tuned_out],
            api_name="generate",
            concurrency_limit=1,
            concurrency_id="generate",
        )
        stop_btn.click(stop, None, None, api_name="stop", cancels=[event], concurrency_limit=None)
        adapter.change(tuned_label, adapter, tuned_out, api_visibility="private", queue=False)
    demo.hubstyle_model = model  # the loaded SideBySide, for tests and benchmarks
    return demo


def launch(settings: SpaceSettings, host: str | None = None, port: int | None = None, **kwargs):
    """Return the launched Blocks of ``settings`` (local only: no share link, no analytics, no remote fonts).

    ``host`` defaults to GRADIO_SERVER_NAME (the Spaces runtime sets 0.0.0.0) or 127.0.0.1; ``port`` to
    GRADIO_SERVER_PORT or the first free one from 7860.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    demo = build_demo(settings)
    kwargs.setdefault("theme", local_theme())
    kwargs.setdefault("css", DEMO_TABLE_CSS)
    kwargs.setdefault("share", False)
    demo.queue(max_size=settings.max_queue, default_concurrency_limit=1)  # bounded: a burst can't grow it forever
    demo.launch(server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=port, **kwargs)
    return demo
