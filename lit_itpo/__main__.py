from lit_itpo.cli import main

main()
