from cs_posthog.cli import main

main()
