from cs_posthog import interrupts

if __name__ == "__main__":
    interrupts.install()  # SIGTERM while the CLI imports stops like Ctrl-C: one line, 143
    try:
        from cs_posthog.cli import main
    except KeyboardInterrupt as exc:
        interrupts.exit_now(exc)
    main()
