from ggufsparse.cli import main

raise SystemExit(main())
